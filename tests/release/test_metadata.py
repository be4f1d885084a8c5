"""The release's metadata check, on a hand-made wheel whose every field is wrong in a known way."""

from __future__ import annotations

import zipfile
from pathlib import Path

from packaging.version import Version

from tools.release.metadata import check_sdist, check_wheel
from tools.release.workspace import Package

PROJECT = {
    "name": "lf-serve", "version": "0.2.0", "readme": "README.md", "license": "Apache-2.0",
    "dependencies": ["lf-models==0.1.0", "fastapi>=0.115"],
    "optional-dependencies": {"vision": ["lf-models[vision]>=0.1.0,<0.2"]},
    "entry-points": {"lf.commands": {"api": "lf_serve.commands:api", "chat": "lf_serve.commands:chat"}},
}
README = "# lf-serve\n\nServing.\n"


def make_wheel(path: Path, metadata: str, entry_points: str, files: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("lf_serve-0.2.0.dist-info/METADATA", metadata)
        wheel.writestr("lf_serve-0.2.0.dist-info/entry_points.txt", entry_points)
        for name in files:
            wheel.writestr(name, "")
    return path


def package(tmp_path: Path) -> Package:
    (tmp_path / "packages/lf-serve").mkdir(parents=True)
    (tmp_path / "packages/lf-serve/README.md").write_text(README)
    return Package("lf-serve", Version("0.2.0"), PROJECT)


GOOD_METADATA = ("Metadata-Version: 2.4\nName: lf-serve\nVersion: 0.2.0\nLicense-Expression: Apache-2.0\n"
                 "Requires-Python: >=3.11\nRequires-Dist: fastapi>=0.115\nRequires-Dist: lf-models==0.1.0\n"
                 "Requires-Dist: lf-models[vision]<0.2,>=0.1.0; extra == 'vision'\n"
                 "Provides-Extra: vision\nDescription-Content-Type: text/markdown\n\n" + README)
GOOD_ENTRY_POINTS = "[lf.commands]\napi = lf_serve.commands:api\nchat = lf_serve.commands:chat\n"


def test_a_matching_wheel_has_only_the_exact_pin_wrong(tmp_path):
    wheel = make_wheel(tmp_path / "good.whl", GOOD_METADATA, GOOD_ENTRY_POINTS,
                       ["lf_serve/__init__.py", "lf_serve/py.typed"])
    assert check_wheel(package(tmp_path), wheel, tmp_path) == [
        "lf-models==0.1.0 pins a sibling exactly; declare the range it supports (e.g. lf-models>=0.1.0,<0.2), "
        "see docs/versioning.md"]


def test_every_mismatch_is_named(tmp_path):
    metadata = (GOOD_METADATA.replace("Version: 0.2.0", "Version: 0.1.9").replace("Apache-2.0", "MIT")
                .replace("Requires-Dist: fastapi>=0.115\n", "").replace("Requires-Python: >=3.11\n", "")
                .replace("text/markdown", "text/x-rst").replace("Serving.", "Old text."))
    wheel = make_wheel(tmp_path / "bad.whl", metadata, "[lf.commands]\napi = lf_serve.commands:api\n",
                       ["lf_serve/__init__.py"])
    problems = check_wheel(package(tmp_path), wheel, tmp_path)
    assert problems == [
        "Version is '0.1.9', expected 0.2.0",
        "Requires-Dist differs from pyproject.toml: missing [('fastapi', (), '>=0.115', '', None)], unexpected []",
        "lf-models==0.1.0 pins a sibling exactly; declare the range it supports (e.g. lf-models>=0.1.0,<0.2), "
        "see docs/versioning.md",
        "entry points differ: missing [('lf.commands', 'chat', 'lf_serve.commands:chat')], unexpected []",
        "lf_serve/py.typed is missing (type hints would be ignored by users' checkers)",
        "License-Expression is 'MIT', expected 'Apache-2.0'",
        "Description-Content-Type is 'text/x-rst', expected text/markdown",
        "the long description is not packages/lf-serve/README.md",
        "Requires-Python is missing",
    ]


def test_sdist_must_hold_what_builds_the_package(tmp_path):
    import tarfile

    sdist = tmp_path / "lf_serve-0.2.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name in ("pyproject.toml", "PKG-INFO", "src/lf_serve/__init__.py"):
            source = tmp_path / "f"
            source.write_text("")
            archive.add(source, arcname=f"lf_serve-0.2.0/{name}")
    assert check_sdist(package(tmp_path), sdist) == [
        "lf_serve-0.2.0.tar.gz lacks lf_serve-0.2.0/README.md",
        "lf_serve-0.2.0.tar.gz lacks lf_serve-0.2.0/src/lf_serve/py.typed"]
