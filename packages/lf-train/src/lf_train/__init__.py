"""LF trainer: training stages, callbacks and the `lf train` command."""

__version__ = "0.1.0"
