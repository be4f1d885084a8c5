"""The CI workflow files call the release commands (the logic stays in tools.release, tested here)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import yaml

from tools.release.workspace import PACKAGES, parse_tag

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_a_release_tag_releases_exactly_that_package():
    workflow = load("release.yml")
    patterns = workflow["on"]["push"]["tags"]
    assert set(workflow["on"]) == {"push"} and set(workflow["on"]["push"]) == {"tags"}
    for package in PACKAGES:
        assert any(fnmatch.fnmatchcase(f"{package}-v0.2.0", p) for p in patterns)
        assert parse_tag(f"{package}-v0.2.0")[0] == package
    (job,) = workflow["jobs"].values()
    assert 'python -m tools.release --tag "$GITHUB_REF_NAME" --publish' in runs(job)
    assert job["permissions"]["id-token"] == "write"
    assert job["steps"][0]["with"]["fetch-depth"] == 0


def test_every_push_checks_all_six_packages_in_isolation():
    workflow = load("isolation.yml")
    assert "push" in workflow["on"]
    (job,) = workflow["jobs"].values()
    assert job["strategy"]["matrix"]["package"] == list(PACKAGES)
    assert "python -m tools.release.isolation ${{ matrix.package }} --siblings lowest" in runs(job)
    assert job["steps"][0]["with"]["fetch-depth"] == 0
