"""Shared by the alone tests: what is installed, and the `lf` script of the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest

LF_PACKAGES = ("lf-data", "lf-models", "lf-serve", "lf-eval", "lf-train", "lf-board")


def only_in(package: str):
    """Skip the module unless this is `package`'s isolated environment."""
    return pytest.mark.skipif(os.environ.get("LF_ISOLATED_PACKAGE") != package,
                              reason=f"runs in {package}'s isolated environment (python -m tools.release.isolation)")


def installed() -> dict[str, str]:
    """Distribution name (lower case, dashes) -> version, for everything in this environment."""
    return {d.metadata["Name"].lower().replace("_", "-"): d.version for d in distributions()}


def lf(*args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    """The `lf` console script the wheel installed in this environment (not the checkout's)."""
    script = Path(sys.executable).parent / "lf"
    assert script.is_file(), f"the wheel installed no lf script next to {sys.executable}"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_from_wheel(module) -> None:
    """The module was imported from this environment's site-packages, not from packages/*/src."""
    assert Path(module.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), module.__file__
