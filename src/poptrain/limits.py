"""The bounds of a run's numbers, in one place (the API, configs and the command line check them)."""

MAX_SEED = 2**63 - 1  # a run's seed is stored as a 64-bit integer
MAX_POPULATION = 1_000_000  # beyond this, creating the members alone would exhaust memory
MAX_WORKERS = 1024  # worker processes or Ray actors one run may ask for
