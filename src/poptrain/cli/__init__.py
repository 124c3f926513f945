"""The ``poptrain`` command line."""
