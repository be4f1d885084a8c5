"""LF model loader: resolve a model reference, load it with the right precision, attach adapters."""

__version__ = "0.1.0"
