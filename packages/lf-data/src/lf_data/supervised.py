"""Temporary alias kept while tests move to lf_data.processors (removed before release)."""

from lf_data.processors.supervised import IGNORE_INDEX, encode_supervised, truncate_pair  # noqa: F401
