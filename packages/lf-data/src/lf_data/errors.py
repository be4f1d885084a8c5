"""Errors that reach the user as one clear message (what, where, how to fix) and no traceback."""


class LFError(Exception):
    """Base of every error the `lf` command prints as a message instead of a traceback."""


class ConfigError(LFError):
    """A configuration key, value or combination is wrong."""


class DataError(LFError):
    """A dataset description, file or row is wrong."""
