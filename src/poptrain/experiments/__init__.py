"""Experiments shipped with poptrain, each runnable with ``poptrain run poptrain.experiments.NAME``."""
