"""Each package declares every sibling it imports, as a range (never an exact pin) that holds the
sibling's version in this workspace and ends at a breaking version (docs/versioning.md)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tools.release.workspace import PACKAGES

REPO = Path(__file__).resolve().parents[2]
IMPORT = re.compile(r"^\s*(?:from|import) (lf_[a-z]+)", re.MULTILINE)


def project(package: str) -> dict:
    return tomllib.loads((REPO / "packages" / package / "pyproject.toml").read_text())["project"]


def next_breaking(version: Version) -> Version:
    """0.x: the next minor (0.1.3 -> 0.2); from 1.0: the next major (1.4.0 -> 2)."""
    return Version(f"0.{version.minor + 1}") if version.major == 0 else Version(f"{version.major + 1}")


def breaking_boundary(version: Version) -> Version:
    """The breaking version at or below `version` (0.3.1 -> 0.3, 2.1 -> 2)."""
    return Version(f"0.{version.minor}") if version.major == 0 else Version(f"{version.major}")


def imported_siblings(package: str) -> set[str]:
    found = set()
    for source in (REPO / "packages" / package / "src").rglob("*.py"):
        found |= {m.replace("_", "-") for m in IMPORT.findall(source.read_text(encoding="utf-8"))}
    return found & set(PACKAGES) - {package}


@pytest.mark.parametrize("package", PACKAGES)
def test_siblings_are_declared_as_ranges_that_hold_the_workspace(package):
    meta = project(package)
    lines = list(meta.get("dependencies", []))
    lines += [line for extra in meta.get("optional-dependencies", {}).values() for line in extra]
    declared = {}
    for line in lines:
        req = Requirement(line)
        if req.name not in PACKAGES:
            continue
        operators = sorted(spec.operator for spec in req.specifier)
        assert operators == ["<", ">="], f"{package}: {line} must be a range '>=low,<next breaking'"
        low = next(Version(s.version) for s in req.specifier if s.operator == ">=")
        high = next(Version(s.version) for s in req.specifier if s.operator == "<")
        # the upper bound is a breaking version (0.N below 1.0, N from 1.0): a range may span several
        assert high >= next_breaking(low) and high == breaking_boundary(high), \
            f"{package}: {line} should end at a breaking version, e.g. <{next_breaking(low)}"
        current = Version(project(req.name)["version"])
        assert req.specifier.contains(current), f"{package}: {line} leaves out the workspace's {req.name} {current}"
        if not req.extras:
            declared[req.name] = str(req.specifier)
    assert set(declared) == imported_siblings(package), f"{package} imports {sorted(imported_siblings(package))}"
    assert PACKAGES.index(package) > max((PACKAGES.index(s) for s in declared), default=-1)
