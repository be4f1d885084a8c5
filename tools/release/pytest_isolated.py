"""pytest plugin for a package's tests run in its isolated environment (tools.release.isolation).

A test that imports a module the package under test does not bring (torch in lf-data's
environment, lf_train in lf-serve's) is skipped with the module named, *when the import is in the
test code* (a test file, a conftest fixture, a helper under tests/). The same missing module
imported by the package's own code is a failure: that is exactly what this run is for (lf-data
importing torch, lf-serve importing trl). A failed test that ran another package's command (`lf
train` in lf-models' tests), which the `lf` dispatcher answered with "lf train is provided by
lf-train, which is not installed", is skipped too. The environment variable LF_ISOLATED_PACKAGE names the
package; this file is copied next to the environment and loaded with `-p pytest_isolated`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

PACKAGE = os.environ.get("LF_ISOLATED_PACKAGE", "the package under test")
LOCATION = re.compile(r"^(?P<path>[^\s:]+\.py):\d+: in ", re.MULTILINE)
MISSING = re.compile(r"ModuleNotFoundError: No module named '(?P<name>[\w.]+)'")
# what the `lf` dispatcher prints for a command whose package is not installed at all
OTHER_COMMAND = re.compile(r"lf (?P<command>[\w-]+) is provided by (?P<dist>lf-[a-z]+), which is not installed")


def _absent(name: str | None) -> str | None:
    """The top-level module of `name` when it is not installed here, else None."""
    if not name:
        return None
    top = name.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return top
    # a folder of tests named like a package (tests/lf_models on sys.path) is only a namespace package
    return top if spec is None or spec.origin in (None, "namespace") else None


def _in_tests(path: str | Path, root: Path) -> bool:
    resolved = Path(path)
    resolved = resolved if resolved.is_absolute() else root / resolved
    try:
        resolved.resolve().relative_to(root / "tests")
    except ValueError:
        return False
    return True


def _importing_frame(excinfo) -> str | None:
    """The file whose import statement raised: the innermost frame outside importlib."""
    for entry in reversed(excinfo.traceback):
        path = str(entry.path)
        if "importlib" in path or path.startswith("<"):
            continue
        return path
    return None


def _skip(report, message: str) -> None:
    path, line, _ = report.location
    report.outcome = "skipped"
    report.longrepr = (str(path), (line or 0) + 1, f"Skipped: {message}")


_SKIPPED_ERRORS: list[tuple[BaseException, str]] = []


def _not_installed(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(dist)
    except PackageNotFoundError:
        return True
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None:
        return
    error = call.excinfo.value
    for seen, message in _SKIPPED_ERRORS:  # a module- or session-scoped fixture's error, raised again
        if seen is error:
            _skip(report, message)
            return
    # a test that runs another package's command (`lf train` in lf-models' tests): the dispatcher said so
    other = OTHER_COMMAND.search(report.capstderr + report.capstdout)
    if other and other["dist"] != PACKAGE and _not_installed(other["dist"]):
        message = f"runs `lf {other['command']}`, a command of {other['dist']}, which {PACKAGE} does not install"
        _SKIPPED_ERRORS.append((error, message))
        _skip(report, message)
        return
    if not call.excinfo.errisinstance(ImportError):
        return
    missing = _absent(getattr(call.excinfo.value, "name", None))
    frame = _importing_frame(call.excinfo)
    if missing and frame and _in_tests(frame, item.config.rootpath):
        _skip(report, f"needs {missing}, which {PACKAGE} does not install (imported by {Path(frame).name})")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    text = str(report.longrepr)
    found = MISSING.search(text)
    locations = [m["path"] for m in LOCATION.finditer(text)]
    missing = _absent(found["name"]) if found else None
    if missing and locations and _in_tests(locations[-1], collector.config.rootpath):
        report.outcome = "skipped"
        report.longrepr = (str(collector.path), 0, f"Skipped: needs {missing}, which {PACKAGE} does not install")
