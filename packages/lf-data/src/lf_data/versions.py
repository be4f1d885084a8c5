"""`lf version`: the installed LF packages and whether they fit together.

The six LF packages are released on their own (docs/versioning.md), each declaring the range of
sibling versions it supports (`lf-models>=0.1.0,<0.2`). pip keeps those ranges on install, but a
later `pip install -U lf-data` or an editable checkout can leave a sibling outside them; this
command says which, from the installed metadata alone (no torch, no transformers).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution

from lf_data.cli import Command

LF_PACKAGES = ("lf-data", "lf-models", "lf-serve", "lf-eval", "lf-train", "lf-board")  # each needs those before it


@dataclass(frozen=True)
class SiblingProblem:
    """One installed LF package whose declared range does not hold a sibling's installed version."""

    package: str
    version: str
    requirement: str  # as declared, e.g. "lf-data<0.2,>=0.1.0"
    sibling: str
    installed: str | None  # None: the sibling is not installed at all

    def __str__(self) -> str:
        found = f"{self.sibling} {self.installed} is installed" if self.installed else f"{self.sibling} is not installed"
        return (f"{self.package} {self.version} needs {self.requirement}, but {found}: "
                f"pip install '{self.requirement}', or upgrade {self.package}")


def _metadata(dist: str) -> tuple[str, list[str]] | None:
    """(version, Requires-Dist lines) of an installed distribution, None when it is not installed."""
    try:
        found = distribution(dist)
    except PackageNotFoundError:
        return None
    return found.version, list(found.requires or [])


def sibling_problems(installed: dict[str, tuple[str, list[str]]]) -> list[SiblingProblem]:
    """Every sibling requirement of the installed LF packages that the installed sibling breaks.

    `installed` maps a package name to (version, Requires-Dist lines); extras' requirements are left
    out (they apply only when the extra was asked for)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    problems = []
    for package, (version, requires) in installed.items():
        for line in requires:
            req = Requirement(line)
            sibling = canonicalize_name(req.name)
            if sibling not in LF_PACKAGES:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            found = installed.get(sibling)
            if found is None or not req.specifier.contains(found[0], prereleases=True):
                problems.append(SiblingProblem(package, version, f"{sibling}{req.specifier}", sibling,
                                               found[0] if found else None))
    return problems


def installed_lf_packages(lookup: Callable[[str], tuple[str, list[str]] | None] = _metadata,
                          names: Iterable[str] = LF_PACKAGES) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, requirements) of the LF packages installed here."""
    return {name: found for name in names if (found := lookup(name)) is not None}


def _run_version(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="lf version",
        description="Print the installed LF packages and flag sibling versions outside their declared ranges "
                    "(exit status 1 when one is).").parse_args(argv)
    installed = installed_lf_packages()
    for dist in LF_PACKAGES:
        print(f"{dist:<10} {installed[dist][0] if dist in installed else 'not installed'}")
    problems = sibling_problems(installed)
    if problems:
        print("\nout of range:")
        for problem in problems:
            print(f"  {problem}")
        return 1
    return 0


version_command = Command(help="print the installed LF packages; flag siblings outside their declared ranges",
                          run=_run_version)
