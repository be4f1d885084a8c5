"""`pip install lf-serve` is what an inference host installs: its dependency closure (extras left
out) must not contain trl, deepspeed, gradio or bitsandbytes. Read from the wheel that is built here
and from the installed distributions' metadata."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import zipfile
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

FORBIDDEN = {"trl", "deepspeed", "gradio", "bitsandbytes"}
REPO = Path(__file__).resolve().parents[2]


def base_requirements(requires: list[str]) -> list[str]:
    """Requirement names that apply without extras on this platform."""
    names = []
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(canonicalize_name(req.name))
    return names


def closure(root_requires: list[str]) -> set[str]:
    seen, todo = set(), base_requirements(root_requires)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(PackageNotFoundError):  # not installed here: a platform-specific dependency
            todo += base_requirements(distribution(name).requires or [])
    return seen


@pytest.fixture(scope="module")
def wheel_requires(tmp_path_factory) -> list[str]:
    if shutil.which("uv") is None:
        pytest.skip("uv is needed to build the wheel")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(["uv", "build", "--wheel", "--package", "lf-serve", "--out-dir", str(out), "--offline"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("lf_serve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(metadata).decode())
        entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "api = lf_serve.commands:api" in archive.read(entry_points).decode()
    return message.get_all("Requires-Dist") or []


def test_built_wheel_pulls_no_training_or_ui_stack(wheel_requires):
    deps = closure(wheel_requires)
    assert {"lf-models", "lf-data", "torch", "transformers", "fastapi", "uvicorn"} <= deps
    assert not deps & FORBIDDEN, sorted(deps & FORBIDDEN)
    vllm_lines = [r for r in wheel_requires if Requirement(r).name == "vllm"]
    assert vllm_lines and all("extra" in str(Requirement(r).marker) for r in vllm_lines)  # only as an extra


def test_installed_lf_serve_closure_has_no_forbidden_names():
    deps = closure(distribution("lf-serve").requires or [])
    assert not deps & FORBIDDEN, sorted(deps & FORBIDDEN)
