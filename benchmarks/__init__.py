"""Speed, memory and quality benchmarks; run from the repository root: ``python -m benchmarks.parallel``."""
