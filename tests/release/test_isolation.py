"""Each package's wheel installed alone in a fresh environment (tools.release.isolation): lf-data on
every test run; the torch-based ones with LF_ISOLATION_TESTS=1. And the pytest plugin that tells a
test's own missing import (skipped) from the package's (a failure)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.release.isolation import NEEDS_MORE_THAN_ITS_PACKAGE, TEST_TOOLS, check_package, package_tests
from tools.release.workspace import PACKAGES, REPO

PLUGIN_DIR = REPO / "tools" / "release"


def test_lf_data_alone_in_a_fresh_environment(capsys):
    outcome = check_package("lf-data", strategy="lowest", which="alone")
    out = capsys.readouterr().out
    assert outcome.ok, out[-3000:]
    assert outcome.summary.startswith("test_lf_data_alone.py: 3 passed in ")
    assert "torch not installed" in out
    assert "lf-data 0.1.0 with lowest siblings: none" in out


@pytest.mark.isolation
@pytest.mark.parametrize("package", PACKAGES[1:])
def test_torch_based_package_alone_in_a_fresh_environment(package, capsys):
    outcome = check_package(package, strategy="lowest", which="alone")
    out = capsys.readouterr().out
    assert outcome.ok, out[-3000:]
    assert "failed" not in outcome.summary and "passed" in outcome.summary


def test_every_package_has_tests_tools_and_an_alone_test():
    for package in PACKAGES:
        module = package.replace("-", "_")
        assert package_tests(package) == [f"tests/release/alone/test_{module}_alone.py", f"tests/{module}"]
        assert TEST_TOOLS[package][0] == "pytest"
    for nodeid in NEEDS_MORE_THAN_ITS_PACKAGE:  # a renamed test must be renamed here too
        path, name = nodeid.split("::")
        assert f"def {name}(" in (REPO / path).read_text(encoding="utf-8"), nodeid


def test_plugin_skips_what_the_test_needs_beyond_the_package_but_fails_the_packages_own(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "pkg_under_test.py").write_text("import not_installed_anywhere_b  # the package imports what it lacks\n")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_imports.py").write_text(textwrap.dedent("""
        def test_test_code_needs_a_module():
            import not_installed_anywhere_a  # noqa: F401

        def test_package_needs_a_module():
            import pkg_under_test  # noqa: F401

        def test_fine():
            assert True

        def test_runs_another_packages_command():
            import sys
            print("lf grow is provided by lf-nowhere, which is not installed: pip install lf-nowhere", file=sys.stderr)
            assert 2 == 0

        def test_its_own_command_is_missing():
            import sys
            print("lf x is provided by lf-x, which is not installed: pip install lf-x", file=sys.stderr)
            assert 2 == 0
    """))
    (tests / "test_at_collection.py").write_text("import not_installed_anywhere_c  # noqa: F401\n\n"
                                                 "def test_never():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": f"{PLUGIN_DIR}{os.pathsep}{site}", "LF_ISOLATED_PACKAGE": "lf-x"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "pytest_isolated", "-p", "no:cacheprovider",
                             "-rfs", "-q", "tests"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 1, out
    assert "2 failed, 1 passed, 3 skipped" in out
    assert "FAILED tests/test_imports.py::test_package_needs_a_module" in out
    assert "FAILED tests/test_imports.py::test_its_own_command_is_missing" in out
    assert "runs `lf grow`, a command of lf-nowhere, which lf-x does not install" in out
    assert "needs not_installed_anywhere_a, which lf-x does not install (imported by test_imports.py)" in out
    assert "needs not_installed_anywhere_c, which lf-x does not install" in out


def test_package_tests_refuse_a_missing_folder(tmp_path):
    from tools.release.workspace import ReleaseError

    with pytest.raises(ReleaseError, match=r"^lf-data's tests folder tests/lf_data does not exist in "):
        package_tests("lf-data", repo=Path(tmp_path))
    with pytest.raises(ReleaseError, match=r"^lf-data has no alone test: tests/release/alone/test_lf_data_alone.py "):
        package_tests("lf-data", which="alone", repo=Path(tmp_path))
