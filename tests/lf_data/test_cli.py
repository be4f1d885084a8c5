import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

from lf_data import cli
from lf_data.cli import Command


def run_lf(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys; from lf_data.cli import main; rc = main(sys.argv[1:]); "
            "heavy = sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules); "
            "print('HEAVY=' + ','.join(heavy), file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands_without_importing_heavy_libraries():
    result = run_lf("--help")
    assert result.returncode == 0
    for name in ("train", "version", "env"):
        assert f"  {name}" in result.stdout
    assert "HEAVY=\n" in result.stderr  # neither torch nor transformers nor datasets was imported


def test_version_is_light_and_lists_all_packages():
    result = run_lf("version")
    assert result.returncode == 0
    for dist in ("lf-data", "lf-models", "lf-train", "lf-serve", "lf-eval", "lf-board"):
        assert f"{dist}" in result.stdout
    from importlib.metadata import version

    assert f"lf-data    {version('lf-data')}" in result.stdout
    assert "HEAVY=\n" in result.stderr


def test_env_reports_libraries_and_device():
    result = run_lf("env")
    assert result.returncode == 0
    for key in ("python", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "device", "bf16"):
        assert any(line.startswith(key) for line in result.stdout.splitlines()), key


def test_unknown_command_suggests_and_missing_package_says_what_to_install(monkeypatch, capsys):
    assert cli.main(["trian"]) == 2
    assert "Did you mean `lf train`?" in capsys.readouterr().err
    only_version = {"version": Command(help="v", run=lambda argv: 0)}
    monkeypatch.setattr(cli, "installed_commands", lambda: only_version)
    real_version = cli.installed_version
    monkeypatch.setattr(cli, "installed_version", lambda dist: None if dist == "lf-train" else real_version(dist))
    assert cli.main(["train", "x.yaml"]) == 2
    assert "lf train is provided by lf-train, which is not installed: pip install lf-train" in capsys.readouterr().err
    assert cli.main(["export"]) == 2  # lf-models is installed here, but this version has no export yet
    assert f"lf export is not in the installed lf-models {real_version('lf-models')}; upgrade it" in \
        capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "pip install lf-serve" in capsys.readouterr().out


def _closure(dist: str, seen: set[str]) -> set[str]:
    for spec in requires(dist) or []:
        req = Requirement(spec)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue  # optional extras are not part of a plain install
        name = req.name.lower().replace("_", "-")
        if name not in seen:
            seen.add(name)
            _closure(name, seen)
    return seen


def test_lf_data_install_does_not_pull_torch():
    pulled = _closure("lf-data", set())
    assert "datasets" in pulled
    assert "transformers" in pulled  # tokenizers only: transformers installs without torch
    assert not pulled & {"torch", "peft", "accelerate", "bitsandbytes"}, pulled
