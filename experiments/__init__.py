"""The seed reproductions: classify, gan, translate, rl, apbt and pb2 studies, and the harness they share with ``benchmarks/``.

Run from the repository root: ``python -m experiments.classify``."""
