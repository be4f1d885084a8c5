"""The release command end to end, in a throwaway git repo made from this working tree: the six
0.1.0 releases tagged, lf-data bumped to 0.2.0 with a CHANGELOG entry and tagged lf-data-v0.2.0, then
`python -m tools.release --tag lf-data-v0.2.0 --publish` to a local pypiserver. And every refusal."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from tools.release.builds import build_sibling
from tools.release.workspace import PACKAGES, REPO, ReleaseError, SiblingSource, read_package, select_siblings

FIX = ("bump project.version in packages/lf-data/pyproject.toml and add a '## <new version>' entry to "
       "packages/lf-data/CHANGELOG.md")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def set_version(repo: Path, version: str, changelog: bool = True, module: bool = True) -> None:
    """Bump lf-data as a developer does: pyproject.toml, __version__, a CHANGELOG entry."""
    pyproject = repo / "packages/lf-data/pyproject.toml"
    pyproject.write_text(re.sub(r'^version = ".*"$', f'version = "{version}"', pyproject.read_text(), count=1,
                                flags=re.MULTILINE))
    if module:
        init = repo / "packages/lf-data/src/lf_data/__init__.py"
        init.write_text(re.sub(r'^__version__ = ".*"$', f'__version__ = "{version}"', init.read_text(), count=1,
                               flags=re.MULTILINE))
    if changelog:
        log = repo / "packages/lf-data/CHANGELOG.md"
        log.write_text(log.read_text().replace("## Unreleased", f"## Unreleased\n\n## {version}\n\n"
                                               "- Released by tests/release/test_release.py.", 1))
    # tests/lf_data/test_cli.py spells lf-data's version; a real bump updates it the same way
    cli_test = repo / "tests/lf_data/test_cli.py"
    cli_test.write_text(re.sub(r'"lf-data    [^"]+"', f'"lf-data    {version}"', cli_test.read_text()))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """This working tree as a fresh repo: `LF 0.1.0` (all six tagged), then `lf-data 0.2.0` (tagged)."""
    repo = tmp_path_factory.mktemp("release") / "repo"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "LF release test")
    git(repo, "config", "user.email", "release-test@example.invalid")
    commit(repo, "LF 0.1.0")
    for package in PACKAGES:
        git(repo, "tag", f"{package}-v0.1.0")
    set_version(repo, "0.2.0")
    commit(repo, "lf-data 0.2.0")
    git(repo, "tag", "lf-data-v0.2.0")
    yield repo
    shutil.rmtree(repo.parent, ignore_errors=True)


def reset(repo: Path) -> None:
    """Back to the lf-data 0.2.0 release commit, nothing uncommitted."""
    git(repo, "reset", "-q", "--hard", "lf-data-v0.2.0")
    git(repo, "clean", "-q", "-f", "-d")


def release(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.release", *args], cwd=repo, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, **(env or {})})


@pytest.fixture
def index(tmp_path):
    """A local pypiserver accepting any upload; yields (upload URL, its package folder)."""
    folder = tmp_path / "index"
    folder.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(port),
                               "-a", ".", "-P", ".", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                urllib.request.urlopen(f"{url}simple/", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "pypiserver did not start within 60 s"
                time.sleep(0.2)
        yield url, folder
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_tagged_release_builds_tests_in_isolation_and_uploads_only_that_package(scratch, index):
    reset(scratch)
    url, folder = index
    result = release(scratch, "--tag", "lf-data-v0.2.0", "--publish", "--publish-url", url,
                     env={"UV_PUBLISH_USERNAME": "test", "UV_PUBLISH_PASSWORD": "test"})
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert "note: previous release: lf-data-v0.1.0" in out
    # lf-models 0.1.0 was not released with a range that takes lf-data 0.2: said, not refused
    assert "note: lf-models in this repo accepts lf-data<0.2,>=0.1.0, not 0.2.0" in out
    assert "lf-data 0.2.0 with newest siblings: none" in out
    assert "torch not installed" in out
    assert re.search(r"^\d+ passed, \d+ skipped, 3 deselected in ", out, re.MULTILINE), out[-3000:]
    artefacts = ["lf_data-0.2.0-py3-none-any.whl", "lf_data-0.2.0.tar.gz"]
    assert sorted(p.name for p in (scratch / "dist").iterdir() if not p.name.startswith(".")) == ["lf-data-0.2.0"]
    assert sorted(p.name for p in (scratch / "dist/lf-data-0.2.0").iterdir() if not p.name.startswith(".")) == artefacts
    assert sorted(p.name for p in folder.iterdir()) == artefacts  # uploaded: lf-data 0.2.0, nothing else
    with urllib.request.urlopen(f"{url}simple/lf-data/", timeout=10) as response:
        assert "lf_data-0.2.0-py3-none-any.whl" in response.read().decode()
    assert out.rstrip().endswith("released: lf-data 0.2.0: dist/lf-data-0.2.0/lf_data-0.2.0-py3-none-any.whl, "
                                 "dist/lf-data-0.2.0/lf_data-0.2.0.tar.gz")
    changed = git(scratch, "diff", "--name-only", "lf-data-v0.1.0", "lf-data-v0.2.0").splitlines()
    assert {path.split("/")[1] for path in changed if path.startswith("packages/")} == {"lf-data"}
    with zipfile.ZipFile(folder / artefacts[0]) as wheel:
        assert "Version: 0.2.0" in wheel.read("lf_data-0.2.0.dist-info/METADATA").decode()
    # publishing the same version again: refused by the tag check before anything is built
    git(scratch, "commit", "-q", "--allow-empty", "-m", "later work")
    again = release(scratch, "lf-data", "--publish", "--publish-url", url)
    assert again.returncode == 1 and "lf-data 0.2.0 is already released" in again.stderr


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line a refused release prints (and that it printed nothing but the first step)."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "==> building" not in result.stdout
    return lines[0]


def test_a_bump_without_a_changelog_entry_is_refused(scratch):
    reset(scratch)
    set_version(scratch, "0.2.1", changelog=False)
    commit(scratch, "lf-data 0.2.1, no changelog")
    git(scratch, "tag", "lf-data-v0.2.1")
    assert refusal(release(scratch, "--tag", "lf-data-v0.2.1", "--publish")) == (
        "release: error: packages/lf-data/CHANGELOG.md has no entry for 0.2.1: add a '## 0.2.1' section saying "
        "what changed (e.g. rename '## Unreleased')")
    assert not (scratch / "dist" / "lf-data-0.2.1").exists()
    git(scratch, "tag", "-d", "lf-data-v0.2.1")


def test_a_version_that_already_has_a_tag_is_refused(scratch):
    reset(scratch)
    append(scratch / "packages/lf-data/src/lf_data/render.py", "# a change after the release\n")
    commit(scratch, "change lf-data without a bump")
    line = refusal(release(scratch, "lf-data"))
    assert re.fullmatch(r"release: error: lf-data 0\.2\.0 is already released: tag lf-data-v0\.2\.0 is on commit "
                        r"[0-9a-f]{10}, not on this one \([0-9a-f]{10}\); " + re.escape(FIX), line), line
    # so is releasing another package's already-tagged version from a later commit
    assert refusal(release(scratch, "--tag", "lf-models-v0.1.0")).startswith(
        "release: error: lf-models 0.1.0 is already released: tag lf-models-v0.1.0 is on commit ")


def test_a_version_not_newer_than_the_last_release_is_refused(scratch):
    reset(scratch)
    set_version(scratch, "0.1.5")
    commit(scratch, "lf-data 0.1.5")
    assert refusal(release(scratch, "lf-data")) == (
        f"release: error: lf-data 0.1.5 (packages/lf-data/pyproject.toml) is not newer than its last release "
        f"lf-data-v0.2.0; {FIX}")


def test_version_and_module_version_must_agree(scratch):
    reset(scratch)
    set_version(scratch, "0.2.1", module=False)
    commit(scratch, "lf-data 0.2.1, __version__ forgotten")
    assert refusal(release(scratch, "lf-data")) == (
        "release: error: packages/lf-data/src/lf_data/__init__.py says __version__ = '0.2.0' but "
        "packages/lf-data/pyproject.toml says 0.2.1: make them equal")


def test_publish_needs_the_tag_on_this_commit_and_a_clean_package_folder(scratch):
    reset(scratch)
    set_version(scratch, "0.2.1")
    commit(scratch, "lf-data 0.2.1")
    assert refusal(release(scratch, "lf-data", "--publish")) == (
        "release: error: --publish needs the release tag on this commit: git tag lf-data-v0.2.1 "
        "(pushing it makes CI release it)")
    git(scratch, "tag", "lf-data-v0.2.1")
    append(scratch / "packages/lf-data/README.md", "\nuncommitted\n")
    assert refusal(release(scratch, "lf-data", "--publish")) == (
        "release: error: packages/lf-data has uncommitted changes (M packages/lf-data/README.md, ...): the "
        "artefacts must be what tag lf-data-v0.2.1 holds; commit or drop them")
    git(scratch, "tag", "-d", "lf-data-v0.2.1")


def test_tags_that_name_another_version_or_no_package_are_refused(scratch):
    reset(scratch)
    assert refusal(release(scratch, "--tag", "lf-data-v0.3.0")) == (
        "release: error: tag lf-data-v0.3.0 says 0.3.0 but packages/lf-data/pyproject.toml says 0.2.0: "
        "tag the commit that bumped it")
    assert refusal(release(scratch, "--tag", "lf-datum-v0.2.0")) == (
        "release: error: unknown package 'lf-datum': one of lf-data, lf-models, lf-serve, lf-eval, lf-train, "
        "lf-board. Did you mean 'lf-data'?")
    assert refusal(release(scratch, "--tag", "v0.2.0")) == (
        "release: error: tag 'v0.2.0' is not a release tag: lf-<name>-v<version>, e.g. lf-data-v0.2.0")
    assert refusal(release(scratch, "lf-serve", "--tag", "lf-data-v0.2.0")) == (
        "release: error: tag lf-data-v0.2.0 is for lf-data, not lf-serve")


def test_sibling_versions_come_from_tags_and_the_working_tree(scratch, tmp_path):
    reset(scratch)
    models = read_package("lf-models", scratch)
    tagged = SiblingSource("lf-data", Version("0.1.0"), "lf-data-v0.1.0")
    # lf-models takes lf-data>=0.1.0,<0.2: the working tree's 0.2.0 is out, newest and lowest are the tag
    assert select_siblings(models, "lowest", scratch) == ([tagged], [])
    assert select_siblings(models, "newest", scratch) == ([tagged], [])
    # lf-serve's lowest: lf-models 0.1.0 as tagged, and lf-data in both ranges (lf-models' at its tag)
    serve = read_package("lf-serve", scratch)
    assert select_siblings(serve, "lowest", scratch) == (
        [tagged, SiblingSource("lf-models", Version("0.1.0"), "lf-models-v0.1.0")], [])
    pyproject = scratch / "packages/lf-models/pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"lf-data>=0.1.0,<0.2"', '"lf-data>=0.1.0,<0.3"'))
    widened = read_package("lf-models", scratch)
    assert select_siblings(widened, "lowest", scratch)[0] == [tagged]
    assert select_siblings(widened, "newest", scratch)[0] == [SiblingSource("lf-data", Version("0.2.0"), None)]
    pyproject.write_text(pyproject.read_text().replace('"lf-data>=0.1.0,<0.3"', '"lf-data>=0.5,<0.6"'))
    with pytest.raises(ReleaseError) as caught:
        select_siblings(read_package("lf-models", scratch), "lowest", scratch)
    assert str(caught.value) == (
        "no version of lf-data built from this repo satisfies lf-data<0.6,>=0.5 (required by lf-models); this repo "
        "has lf-data 0.1.0 (lf-data-v0.1.0), lf-data 0.2.0 (lf-data-v0.2.0), lf-data 0.2.0 (working tree)")
    # the tagged sibling is built from the tag's files, not the working tree's
    wheel = build_sibling(tagged, tmp_path / "wheels", scratch)
    assert wheel.name == "lf_data-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        assert '__version__ = "0.1.0"' in archive.read("lf_data/__init__.py").decode()
    # with no older release tagged, the lowest is the working tree's version, and the notes say so
    reset(scratch)
    git(scratch, "tag", "-d", "lf-data-v0.1.0", "lf-data-v0.2.0")
    try:
        pyproject.write_text(pyproject.read_text().replace('"lf-data>=0.1.0,<0.2"', '"lf-data>=0.1.0,<0.3"'))
        assert select_siblings(read_package("lf-models", scratch), "lowest", scratch) == (
            [SiblingSource("lf-data", Version("0.2.0"), None)],
            ["lf-data: no release older than 0.2.0 is tagged here (lf-data-v*), so the lowest allowed is the "
             "working tree's 0.2.0"])
    finally:
        git(scratch, "tag", "lf-data-v0.1.0", "HEAD~1")
        git(scratch, "tag", "lf-data-v0.2.0", "HEAD")
        reset(scratch)
