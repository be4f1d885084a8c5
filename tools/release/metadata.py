"""What a built wheel says about itself, checked against the pyproject.toml it was built from:
name, version, dependencies (sibling ranges, not pins), entry points, py.typed, licence, README;
then `twine check --strict` on wheel and sdist (what PyPI would refuse)."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.release.workspace import PACKAGES, REPO, Package, ReleaseError

EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _requirement_key(req: Requirement, extra: str | None) -> tuple:
    marker = str(req.marker) if req.marker else ""
    if extra is None:
        found = EXTRA.search(marker)
        extra = found[1] if found else None
        marker = EXTRA.sub("", marker).strip().removesuffix("and").removeprefix("and").strip()
    return canonicalize_name(req.name), tuple(sorted(req.extras)), str(req.specifier), marker, extra


def wheel_metadata(wheel: Path) -> tuple[dict[str, list[str]], str, list[str]]:
    """(METADATA headers as lists, the long description, the wheel's file names)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise ReleaseError(f"{wheel.name} has no .dist-info/METADATA")
        message = Parser().parsestr(archive.read(meta).decode("utf-8"))
        headers: dict[str, list[str]] = {}
        for key, value in message.items():
            headers.setdefault(key, []).append(value)
        entry = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        if entry:
            headers["_entry_points"] = [archive.read(entry).decode("utf-8")]
        return headers, message.get_payload() or "", names


def check_wheel(package: Package, wheel: Path, repo: Path = REPO) -> list[str]:
    """Every way the wheel's metadata differs from what the package declares (empty: it matches)."""
    headers, description, names = wheel_metadata(wheel)
    one = {key: values[0] for key, values in headers.items()}
    problems = []
    if canonicalize_name(one.get("Name", "")) != package.name:
        problems.append(f"Name is {one.get('Name')!r}, expected {package.name!r}")
    if one.get("Version") != str(package.version):
        problems.append(f"Version is {one.get('Version')!r}, expected {package.version}")
    declared = {_requirement_key(req, extra) for req, extra in package.all_requirements()}
    built = {_requirement_key(Requirement(line), None) for line in headers.get("Requires-Dist", [])}
    if declared != built:
        problems.append(f"Requires-Dist differs from pyproject.toml: missing {sorted(declared - built)}, "
                        f"unexpected {sorted(built - declared)}")
    for req, _ in package.all_requirements():
        if canonicalize_name(req.name) in PACKAGES and any(s.operator in ("==", "===") for s in req.specifier):
            problems.append(f"{req} pins a sibling exactly; declare the range it supports (e.g. "
                            f"{req.name}>=0.1.0,<0.2), see docs/versioning.md")
    expected_eps = {(group, name, value) for group, table in package.project.get("entry-points", {}).items()
                    for name, value in table.items()}
    expected_eps |= {("console_scripts", name, value) for name, value in package.project.get("scripts", {}).items()}
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # entry point names are case-sensitive
    parser.read_string(headers.get("_entry_points", [""])[0])
    built_eps = {(group, name, value.strip()) for group in parser.sections() for name, value in parser[group].items()}
    if expected_eps != built_eps:
        problems.append(f"entry points differ: missing {sorted(expected_eps - built_eps)}, "
                        f"unexpected {sorted(built_eps - expected_eps)}")
    if f"{package.module}/py.typed" not in names:
        problems.append(f"{package.module}/py.typed is missing (type hints would be ignored by users' checkers)")
    if one.get("License-Expression") != package.project.get("license"):
        problems.append(f"License-Expression is {one.get('License-Expression')!r}, "
                        f"expected {package.project.get('license')!r}")
    readme = repo / package.folder / package.project.get("readme", "README.md")
    if one.get("Description-Content-Type", "").split(";")[0] != "text/markdown":
        problems.append(f"Description-Content-Type is {one.get('Description-Content-Type')!r}, expected text/markdown")
    if not readme.is_file() or description.strip() != readme.read_text(encoding="utf-8").strip():
        problems.append(f"the long description is not {readme.relative_to(repo)}")
    if not one.get("Requires-Python"):
        problems.append("Requires-Python is missing")
    return problems


def check_sdist(package: Package, sdist: Path) -> list[str]:
    """The sdist builds the same package: its pyproject.toml, README and sources are inside."""
    root = f"{package.module}-{package.version}"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    needed = [f"{root}/pyproject.toml", f"{root}/README.md", f"{root}/src/{package.module}/__init__.py",
              f"{root}/src/{package.module}/py.typed", f"{root}/PKG-INFO"]
    return [f"{sdist.name} lacks {name}" for name in needed if name not in names]


def twine_check(files: list[Path]) -> None:
    """`twine check --strict`: the metadata an index accepts and a README that renders."""
    try:
        import twine  # noqa: F401
    except ImportError:
        raise ReleaseError("twine is not installed in this environment: run the command with `uv run` "
                           "(the dev group has it) or pip install twine") from None
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        raise ReleaseError(f"twine check --strict failed: {' '.join(lines[-3:])}")


def check_artefacts(package: Package, files: list[Path], repo: Path = REPO) -> None:
    wheel = next(f for f in files if f.suffix == ".whl")
    sdist = next((f for f in files if f.name.endswith(".tar.gz")), None)
    problems = check_wheel(package, wheel, repo) + (check_sdist(package, sdist) if sdist else [])
    if problems:
        raise ReleaseError(f"{wheel.name}: " + "; ".join(problems))
    twine_check(files)
