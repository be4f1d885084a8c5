"""The release tests: the release command against a throwaway repo and a local index, the isolation
check, `lf version` and the declared ranges. Installing a torch-based package alone is behind the
`isolation` marker (LF_ISOLATION_TESTS=1 runs them; CI's isolation workflow runs the same checks with
each package's whole test folder)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tools.release, the code under test, lives at the repo root
    sys.path.append(str(REPO))

ISOLATION_ENV = "LF_ISOLATION_TESTS"


def pytest_collection_modifyitems(config, items):
    if os.environ.get(ISOLATION_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"installs torch in a fresh environment: {ISOLATION_ENV}=1 runs it "
                                   "(the isolation workflow always does)")
    for item in items:
        if item.get_closest_marker("isolation"):
            item.add_marker(skip)
