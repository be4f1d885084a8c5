"""Per-package releases of the six LF libraries (docs/versioning.md says why and the rules).

- `python -m tools.release lf-data [--publish]`: release one package (checks, build, isolated tests,
  metadata, upload; a dry run unless --publish).
- `python -m tools.release.isolation lf-serve [--siblings lowest]`: install one package's wheel alone
  in a fresh virtual environment with sibling wheels built from this repo and run its tests there.

Only the standard library, `packaging` and `twine` are imported here (never LF itself), so these run
from a checkout whose workspace is mid-bump.
"""
