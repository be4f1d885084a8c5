"""Tests of what installing one package alone brings. They run only inside that package's isolated
environment (tools.release.isolation sets LF_ISOLATED_PACKAGE); in the workspace, where every package
is installed, they would be meaningless, so they are not collected there."""

import os

if not os.environ.get("LF_ISOLATED_PACKAGE"):
    collect_ignore_glob = ["test_*.py"]
