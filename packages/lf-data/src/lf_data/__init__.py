"""LF data worker: dataset spec, loading, chat templates and tokenisation (no torch)."""

__version__ = "0.1.0"
