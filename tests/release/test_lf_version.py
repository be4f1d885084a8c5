"""`lf version`: each installed LF package's version, and sibling versions outside declared ranges."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from lf_data.versions import LF_PACKAGES, SiblingProblem, installed_lf_packages, sibling_problems

REPO = Path(__file__).resolve().parents[2]


def run_version(env: dict | None = None) -> subprocess.CompletedProcess:
    code = ("import sys; from lf_data.cli import main; rc = main(['version']); "
            "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules), "
            "file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def declared_version(package: str) -> str:
    return tomllib.loads((REPO / "packages" / package / "pyproject.toml").read_text())["project"]["version"]


def eval_range(package: str) -> str:
    project = tomllib.loads((REPO / "packages" / package / "pyproject.toml").read_text())["project"]
    (req,) = [Requirement(line) for line in project["dependencies"] if Requirement(line).name == "lf-eval"]
    return f"lf-eval{req.specifier}"


def test_version_lists_the_workspace_in_order_with_nothing_out_of_range():
    result = run_version()
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [f"{name:<10} {declared_version(name)}" for name in LF_PACKAGES]
    assert "HEAVY=\n" in result.stderr


def test_version_flags_a_sibling_outside_the_declared_range(tmp_path):
    """An lf-eval whose metadata wants lf-serve 0.5, found first on the path, as after a partial upgrade."""
    info = tmp_path / "lf_eval-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.4\nName: lf-eval\nVersion: 0.3.0\n"
                                   "Requires-Dist: lf-data<0.2,>=0.1.0\nRequires-Dist: lf-serve<0.6,>=0.5\n"
                                   "Requires-Dist: lf-train<0.9,>=0.8; extra == 'never'\nRequires-Dist: nltk>=3.9\n")
    result = run_version({"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    serve = declared_version("lf-serve")
    assert result.stdout.splitlines()[3:] == [
        "lf-eval    0.3.0", f"lf-train   {declared_version('lf-train')}", f"lf-board   {declared_version('lf-board')}",
        "", "out of range:",
        f"  lf-eval 0.3.0 needs lf-serve<0.6,>=0.5, but lf-serve {serve} is installed: pip install "
        "'lf-serve<0.6,>=0.5', or upgrade lf-eval",
        # and the installed lf-train and lf-board do not take lf-eval 0.3
        *(f"  {name} {declared_version(name)} needs {eval_range(name)}, but lf-eval 0.3.0 is installed: "
          f"pip install '{eval_range(name)}', or upgrade {name}" for name in ("lf-train", "lf-board")),
    ]


def test_sibling_problems_reads_ranges_markers_and_missing_siblings():
    installed = {
        "lf-data": ("0.2.0", ["pyyaml>=6.0"]),
        "lf-models": ("0.1.0", ["lf-data<0.2,>=0.1.0", "torch>=2.4"]),
        "lf-serve": ("0.1.0", ["lf-data<0.3,>=0.1.0", "lf-models<0.2,>=0.1.0",
                               "lf-models[vision]<0.2,>=0.1.0; extra == 'vision'"]),
        "lf-eval": ("0.1.0", ["lf-serve<0.2,>=0.1.0", "lf-train<0.2,>=0.1.0; extra == 'train'"]),
        "lf-board": ("0.1.0", ["lf-train<0.2,>=0.1.0"]),
    }
    assert sibling_problems(installed) == [
        SiblingProblem("lf-models", "0.1.0", "lf-data<0.2,>=0.1.0", "lf-data", "0.2.0"),
        SiblingProblem("lf-board", "0.1.0", "lf-train<0.2,>=0.1.0", "lf-train", None),
    ]
    assert str(sibling_problems(installed)[1]) == (
        "lf-board 0.1.0 needs lf-train<0.2,>=0.1.0, but lf-train is not installed: pip install "
        "'lf-train<0.2,>=0.1.0', or upgrade lf-board")
    assert sibling_problems({name: ("0.1.0", []) for name in LF_PACKAGES}) == []


def test_installed_lf_packages_leaves_out_what_is_not_installed():
    found = installed_lf_packages(lambda name: ("1.0", []) if name == "lf-data" else None)
    assert found == {"lf-data": ("1.0", [])}
