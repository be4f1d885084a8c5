"""The packages of this repository, their versions and sibling ranges, their release tags and
changelogs: everything the release and isolation commands read before building anything."""

from __future__ import annotations

import difflib
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("lf-data", "lf-models", "lf-serve", "lf-eval", "lf-train", "lf-board")  # each imports those before it
TAG = re.compile(r"^(?P<package>lf-[a-z]+)-v(?P<version>\d[^\s]*)$")


class ReleaseError(Exception):
    """A refusal or a failed step, said in one line that names the file or command and the fix."""


def git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    except FileNotFoundError:
        raise ReleaseError("git is not installed: releases read the package's tags with it") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise ReleaseError(f"`git {' '.join(args)}` failed in {repo}: {last}")
    return result.stdout.strip()


def check_name(name: str) -> str:
    """`name` if it is one of the six packages; otherwise the closest one in the error."""
    if name in PACKAGES:
        return name
    close = difflib.get_close_matches(name, PACKAGES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ReleaseError(f"unknown package {name!r}: one of {', '.join(PACKAGES)}.{hint}")


def tag_name(package: str, version: Version | str) -> str:
    return f"{package}-v{version}"


def parse_tag(tag: str) -> tuple[str, Version]:
    """`lf-data-v0.2.0` -> ("lf-data", Version("0.2.0")); the one tag format releases use."""
    match = TAG.match(tag.removeprefix("refs/tags/"))
    if match is None:
        raise ReleaseError(f"tag {tag!r} is not a release tag: lf-<name>-v<version>, e.g. lf-data-v0.2.0")
    try:
        return check_name(match["package"]), Version(match["version"])
    except InvalidVersion:
        raise ReleaseError(f"tag {tag!r}: {match['version']!r} is not a PEP 440 version") from None


@dataclass(frozen=True)
class Package:
    """One package as its pyproject.toml declares it (in the working tree or at a tag)."""

    name: str
    version: Version
    project: dict  # the [project] table
    source: str | None = None  # the tag it was read at; None: the working tree

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")

    @property
    def folder(self) -> str:
        return f"packages/{self.name}"

    def sibling_ranges(self) -> dict[str, SpecifierSet]:
        """Sibling -> the range a plain install (no extras) requires."""
        ranges: dict[str, SpecifierSet] = {}
        for line in self.project.get("dependencies", []):
            req = Requirement(line)
            name = canonicalize_name(req.name)
            if name in PACKAGES:
                ranges[name] = ranges.get(name, SpecifierSet()) & req.specifier
        return ranges

    def all_requirements(self) -> list[tuple[Requirement, str | None]]:
        """Every declared requirement with the extra it belongs to (None: a plain install)."""
        found = [(Requirement(line), None) for line in self.project.get("dependencies", [])]
        for extra, lines in self.project.get("optional-dependencies", {}).items():
            found += [(Requirement(line), extra) for line in lines]
        return found


def _parse_project(text: str, where: str) -> dict:
    try:
        project = tomllib.loads(text)["project"]
    except (tomllib.TOMLDecodeError, KeyError) as err:
        raise ReleaseError(f"{where}: no readable [project] table ({err})") from None
    return project


def read_package(name: str, repo: Path = REPO, tag: str | None = None) -> Package:
    """The package as the working tree (or the tag `tag`) declares it."""
    check_name(name)
    where = f"packages/{name}/pyproject.toml"
    if tag is None:
        path = repo / where
        if not path.is_file():
            raise ReleaseError(f"{path} does not exist")
        text = path.read_text(encoding="utf-8")
    else:
        text = git(repo, "show", f"{tag}:{where}")
        where = f"{where} at {tag}"
    project = _parse_project(text, where)
    if canonicalize_name(project.get("name", "")) != name:
        raise ReleaseError(f"{where}: project.name is {project.get('name')!r}, expected {name!r}")
    try:
        version = Version(project["version"])
    except (KeyError, InvalidVersion):
        raise ReleaseError(f"{where}: project.version {project.get('version')!r} is not a PEP 440 version") from None
    return Package(name, version, project, tag)


def release_tags(package: str, repo: Path = REPO) -> dict[Version, str]:
    """Version -> tag for every `lf-<name>-v<version>` tag of `package` (other tags are ignored)."""
    tags = {}
    for tag in git(repo, "tag", "--list", f"{package}-v*").splitlines():
        match = TAG.match(tag)
        if match and match["package"] == package:
            try:
                tags[Version(match["version"])] = tag
            except InvalidVersion:
                continue
    return tags


def tag_commit(tag: str, repo: Path = REPO) -> str:
    return git(repo, "rev-list", "-n", "1", tag)


def changelog_entry(package: Package, repo: Path = REPO) -> str | None:
    """The text under `## <version>` (also `## [0.2.0]`, `## v0.2.0`, `## 0.2.0 - 2025-01-31`) of the
    package's CHANGELOG.md; None when there is no such heading or nothing under it."""
    path = repo / package.folder / "CHANGELOG.md"
    if not path.is_file():
        return None
    heading = re.compile(rf"^##\s+\[?v?{re.escape(str(package.version))}\]?(\s|$)")
    lines = path.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if heading.match(line):
            body = []
            for following in lines[index + 1:]:
                if following.startswith("## "):
                    break
                body.append(following)
            text = "\n".join(body).strip()
            return text or None
    return None


def module_version(package: Package, repo: Path = REPO) -> str | None:
    """The `__version__ = "..."` literal of the package's __init__.py, if it has one."""
    init = repo / package.folder / "src" / package.module / "__init__.py"
    if not init.is_file():
        return None
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', init.read_text(encoding="utf-8"), re.MULTILINE)
    return match[1] if match else None


@dataclass(frozen=True)
class SiblingSource:
    """Where a sibling wheel is built from: a release tag, or the working tree (tag None)."""

    name: str
    version: Version
    tag: str | None

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.tag or 'working tree'})"


def sibling_candidates(name: str, repo: Path = REPO) -> list[SiblingSource]:
    """Every version of `name` this repo can build: its release tags and the working tree."""
    found = [SiblingSource(name, version, tag) for version, tag in release_tags(name, repo).items()]
    current = read_package(name, repo)
    found.append(SiblingSource(name, current.version, None))
    return found


def select_siblings(package: Package, strategy: str = "newest", repo: Path = REPO) -> tuple[list[SiblingSource], list[str]]:
    """The sibling versions to install `package` with, and notes on the choice.

    `newest`: the highest version each range allows (the working tree wins a tie: it is what the
    repo tests). `lowest`: the lowest version each range allows that this repo can build (a tag wins
    a tie: it is what was released); where no older release exists the working tree's version is the
    lowest, and the notes say so. Ranges of the chosen siblings count too (lf-serve brings lf-models,
    whose own range on lf-data narrows lf-data's), until nothing changes."""
    if strategy not in ("newest", "lowest"):
        raise ReleaseError(f"--siblings {strategy!r}: one of newest, lowest")
    candidates: dict[str, list[SiblingSource]] = {}
    chosen: dict[str, SiblingSource] = {}
    for _ in range(len(PACKAGES) + 2):
        ranges = dict(package.sibling_ranges())
        requirers = {name: [package.name] for name in ranges}
        for source in chosen.values():
            declared = read_package(source.name, repo, source.tag)
            for name, spec in declared.sibling_ranges().items():
                ranges[name] = ranges.get(name, SpecifierSet()) & spec
                requirers.setdefault(name, []).append(f"{source.name} {source.version}")
        picked = {}
        for name, spec in ranges.items():
            candidates.setdefault(name, sibling_candidates(name, repo))
            fitting = [c for c in candidates[name] if spec.contains(c.version, prereleases=True)]
            if not fitting:
                have = ", ".join(c.describe() for c in candidates[name])
                raise ReleaseError(f"no version of {name} built from this repo satisfies {name}{spec} "
                                   f"(required by {', '.join(requirers[name])}); this repo has {have}")
            if strategy == "lowest":
                picked[name] = min(fitting, key=lambda c: (c.version, c.tag is None))
            else:
                picked[name] = max(fitting, key=lambda c: (c.version, c.tag is None))
        if picked == chosen:
            break
        chosen = picked
    notes = []
    for source in chosen.values():
        if strategy == "lowest" and source.tag is None:
            older = [c for c in candidates[source.name] if c.tag is not None and c.version < source.version]
            if not older:
                notes.append(f"{source.name}: no release older than {source.version} is tagged here "
                             f"({tag_name(source.name, '*')}), so the lowest allowed is the working tree's "
                             f"{source.version}")
    ordered = [chosen[name] for name in PACKAGES if name in chosen]
    return ordered, notes
