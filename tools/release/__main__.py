"""Release one LF package: `uv run python -m tools.release lf-data [--publish]`.

In order, stopping at the first problem with one line saying what and how to fix it:
1. the version in packages/<name>/pyproject.toml is newer than the package's last release tag
   (`lf-<name>-v<version>`), its own tag (if any) is on this commit, its CHANGELOG.md has a
   `## <version>` entry, and its `__version__` agrees;
2. `uv build --package <name> --no-sources`: its sdist and wheel, in dist/<name>-<version>/;
3. the wheel's metadata against pyproject.toml (name, version, dependencies with sibling ranges,
   entry points, py.typed, licence, README) and `twine check --strict`;
4. the wheel installed alone in a fresh virtual environment, with the newest sibling wheels its
   ranges allow built from this repo, and its tests run there (tools.release.isolation);
5. `uv publish` to --publish-url (PyPI unless told otherwise): a dry run unless --publish, which also
   needs the release tag on this commit and no uncommitted change in the package's folder.

CI (.github/workflows/release.yml) runs `python -m tools.release --tag lf-data-v0.2.0 --publish` when
that tag is pushed. Credentials come from uv's own settings (UV_PUBLISH_TOKEN, UV_PUBLISH_USERNAME /
UV_PUBLISH_PASSWORD, or trusted publishing on GitHub Actions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name

from tools.release.builds import build_package, run
from tools.release.isolation import check_isolated
from tools.release.metadata import check_artefacts
from tools.release.workspace import (
    PACKAGES,
    REPO,
    Package,
    ReleaseError,
    changelog_entry,
    check_name,
    git,
    module_version,
    parse_tag,
    read_package,
    release_tags,
    tag_commit,
    tag_name,
)

DEFAULT_PUBLISH_URL = "https://upload.pypi.org/legacy/"


def check_release(package: Package, publish: bool, repo: Path = REPO) -> list[str]:
    """Refuse what must not be released; return notes worth printing."""
    notes = []
    version, pyproject = package.version, f"{package.folder}/pyproject.toml"
    fix = f"bump project.version in {pyproject} and add a '## <new version>' entry to {package.folder}/CHANGELOG.md"
    tags = release_tags(package.name, repo)
    head = git(repo, "rev-parse", "HEAD")
    own = tags.get(version)
    if own is not None and tag_commit(own, repo) != head:
        raise ReleaseError(f"{package.name} {version} is already released: tag {own} is on commit "
                           f"{tag_commit(own, repo)[:10]}, not on this one ({head[:10]}); {fix}")
    older = [v for v in tags if v != version]
    if older and version <= max(older):
        last = tags[max(older)]
        raise ReleaseError(f"{package.name} {version} ({pyproject}) is not newer than its last release {last}; {fix}")
    if changelog_entry(package, repo) is None:
        raise ReleaseError(f"{package.folder}/CHANGELOG.md has no entry for {version}: add a '## {version}' "
                           f"section saying what changed (e.g. rename '## Unreleased')")
    in_module = module_version(package, repo)
    if in_module is not None and in_module != str(version):
        raise ReleaseError(f"{package.folder}/src/{package.module}/__init__.py says __version__ = {in_module!r} but "
                           f"{pyproject} says {version}: make them equal")
    if publish:
        if own is None:
            raise ReleaseError(f"--publish needs the release tag on this commit: git tag {tag_name(package.name, version)} "
                               f"(pushing it makes CI release it)")
        dirty = git(repo, "status", "--porcelain", "--", package.folder)
        if dirty:
            raise ReleaseError(f"{package.folder} has uncommitted changes ({dirty.splitlines()[0].strip()}, ...): "
                               f"the artefacts must be what tag {own} holds; commit or drop them")
    else:
        if own is None:
            notes.append(f"not tagged yet: once this passes, `git tag {tag_name(package.name, version)}` and push it")
        if git(repo, "status", "--porcelain", "--", package.folder):
            notes.append(f"{package.folder} has uncommitted changes: this dry run builds them as they are")
    notes.append(f"previous release: {tags[max(older)]}" if older else f"first release of {package.name}")
    for other in PACKAGES:  # siblings in this repo whose range leaves the new version out
        if other == package.name:
            continue
        spec = read_package(other, repo).sibling_ranges().get(package.name)
        if spec is not None and not spec.contains(version, prereleases=True):
            notes.append(f"{other} in this repo accepts {package.name}{spec}, not {version}: its next release "
                         f"must widen that range before users get both")
    return notes


def publish(files: list[Path], url: str, check_url: str | None, dry_run: bool, repo: Path = REPO) -> str:
    command = ["uv", "publish", "--publish-url", url, *(["--check-url", check_url] if check_url else []),
               *(["--dry-run"] if dry_run else []), *map(str, files)]
    return run(command, cwd=repo, what=f"uv publish to {url}" + (" (dry run)" if dry_run else ""), timeout=600)


def release(name: str, *, publish_it: bool = False, publish_url: str = DEFAULT_PUBLISH_URL,
            check_url: str | None = None, out_dir: Path | None = None, repo: Path = REPO) -> list[Path]:
    """Every step of a release of `name`; the artefacts it built (and uploaded with publish_it)."""
    package = read_package(check_name(name), repo)
    print(f"==> {package.name} {package.version}: checking version, tags and changelog", flush=True)
    for note in check_release(package, publish_it, repo):
        print(f"    note: {note}", flush=True)
    out_dir = out_dir or repo / "dist" / f"{package.name}-{package.version}"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    print(f"==> building sdist and wheel into {out_dir}", flush=True)
    files = build_package(package, out_dir, repo)
    print("==> checking metadata (name, version, dependencies, entry points, py.typed, licence, README; "
          "twine check --strict)", flush=True)
    check_artefacts(package, files, repo)
    print("==> installing the wheel alone in a fresh environment and running its tests", flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"lf-release-{package.name}-"))
    try:
        wheel = next(f for f in files if f.suffix == ".whl")
        outcome = check_isolated(package, wheel, work, "newest", "all", repo)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not outcome.ok:
        raise ReleaseError(f"{package.name}'s tests failed in its isolated environment ({outcome.summary}); "
                           f"nothing was published")
    print(f"==> uv publish to {publish_url}" + ("" if publish_it else " (dry run: --publish uploads)"), flush=True)
    publish(files, publish_url, check_url, dry_run=not publish_it, repo=repo)
    done = "released" if publish_it else "ready to release (dry run, nothing uploaded)"
    print(f"{done}: {package.name} {package.version}: {', '.join(str(f.relative_to(repo)) if f.is_relative_to(repo) else str(f) for f in files)}")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.release", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Steps:\n" + __doc__.split("\n\n", 1)[1])
    parser.add_argument("package", nargs="?", help=f"one of {', '.join(PACKAGES)}")
    parser.add_argument("--tag", help="release the package and version this tag names (lf-<name>-v<version>); CI passes it")
    parser.add_argument("--publish", action="store_true", help="upload (default: a dry run of uv publish)")
    parser.add_argument("--publish-url", default=os.environ.get("LF_PUBLISH_URL", DEFAULT_PUBLISH_URL),
                        help="the index's upload URL (env LF_PUBLISH_URL; default PyPI's)")
    parser.add_argument("--check-url", default=os.environ.get("LF_CHECK_URL"),
                        help="the index's simple URL: files already there are skipped, not refused (env LF_CHECK_URL)")
    parser.add_argument("--out-dir", type=Path, help="where the artefacts go (default dist/<name>-<version>/)")
    ns = parser.parse_args(argv)
    try:
        if ns.tag:
            tagged, version = parse_tag(ns.tag)
            if ns.package and canonicalize_name(ns.package) != tagged:
                raise ReleaseError(f"tag {ns.tag} is for {tagged}, not {ns.package}")
            declared = read_package(tagged).version
            if declared != version:
                raise ReleaseError(f"tag {ns.tag} says {version} but packages/{tagged}/pyproject.toml says {declared}: "
                                   f"tag the commit that bumped it")
            name = tagged
        elif ns.package:
            name = ns.package
        else:
            parser.error("name a package (e.g. lf-data) or pass --tag")
        release(name, publish_it=ns.publish, publish_url=ns.publish_url, check_url=ns.check_url, out_dir=ns.out_dir)
    except ReleaseError as err:
        print(f"release: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
