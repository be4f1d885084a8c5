"""Building wheels and sdists with `uv build`, from the working tree or from a release tag."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tools.release.workspace import REPO, Package, ReleaseError, SiblingSource


def run(command: list[str], cwd: Path, what: str, timeout: int = 1800, env: dict | None = None) -> str:
    """Run a tool; on failure one line saying what failed, with the tool's last line of output."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise ReleaseError(f"{what}: {command[0]!r} is not installed (pip install uv)") from None
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"{what}: `{' '.join(command[:3])} ...` took longer than {timeout} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise ReleaseError(f"{what} failed: {last[0]}")
    return result.stdout


def build_package(package: Package, out_dir: Path, repo: Path = REPO, sdist: bool = True) -> list[Path]:
    """`uv build --package` from the working tree, without workspace sources (as an index user gets it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = ["--sdist", "--wheel"] if sdist else ["--wheel"]
    run(["uv", "build", "--package", package.name, *kinds, "--no-sources", "--out-dir", str(out_dir), "--quiet"],
        cwd=repo, what=f"uv build --package {package.name}")
    stem = f"{package.module}-{package.version}"
    built = sorted(out_dir.glob(f"{stem}-*.whl")) + (sorted(out_dir.glob(f"{stem}.tar.gz")) if sdist else [])
    if len(built) != (2 if sdist else 1):
        raise ReleaseError(f"uv build --package {package.name} left {[p.name for p in out_dir.iterdir()]} "
                           f"in {out_dir}, not {stem}'s {'sdist and ' if sdist else ''}wheel")
    return built


def build_sibling(source: SiblingSource, out_dir: Path, repo: Path = REPO) -> Path:
    """The wheel of a sibling: from the working tree, or from the package folder at its release tag
    (extracted with `git archive` and built on its own, outside the workspace)."""
    from tools.release.workspace import read_package

    if source.tag is None:
        return build_package(read_package(source.name, repo), out_dir, repo, sdist=False)[0]
    folder = f"packages/{source.name}"
    archive = subprocess.run(["git", "archive", "--format=tar", source.tag, folder], cwd=repo, capture_output=True)
    if archive.returncode != 0:
        raise ReleaseError(f"git archive {source.tag} {folder} failed: {archive.stderr.decode().strip()}")
    scratch = Path(tempfile.mkdtemp(prefix=f"lf-release-{source.name}-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(scratch, filter="data")
        out_dir.mkdir(parents=True, exist_ok=True)
        run(["uv", "build", str(scratch / folder), "--wheel", "--no-sources", "--out-dir", str(out_dir), "--quiet"],
            cwd=scratch, what=f"uv build of {source.name} at {source.tag}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wheels = sorted(out_dir.glob(f"{source.name.replace('-', '_')}-{source.version}-*.whl"))
    if not wheels:
        raise ReleaseError(f"building {source.name} at {source.tag} gave no {source.version} wheel")
    return wheels[0]
