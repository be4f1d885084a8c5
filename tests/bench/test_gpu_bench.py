"""bench/gpu.py's runs (it needs a GPU, so CI checks its plan): every method x variant config is one `lf train`
accepts, keys and combinations, and the variants change only what they name."""

import sys
from pathlib import Path

import pytest

from lf_train.plan import check_train_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import gpu  # noqa: E402
import gpu_kit  # noqa: E402
import vs_llamafactory  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_bench")
    vs_llamafactory.write_data(folder, vs_llamafactory.corpus(), sft_rows=200)
    return folder


@pytest.mark.parametrize("method", sorted(gpu.METHODS))
def test_every_planned_run_is_a_valid_lf_train_config(method, tiny_llama, data, tmp_path):
    keys, _ = gpu.METHODS[method]
    base = gpu.train_config(str(tiny_llama), keys, {}, data, tmp_path / "out", steps=20, batch=8,
                            cpu_smoke=False)
    assert base["bf16"] is True and base["max_samples"] == 160 and base["cutoff_len"] == 1024
    for name, variant, _ in gpu.VARIANTS.values():
        config = gpu.train_config(str(tiny_llama), keys, variant, data, tmp_path / "out", steps=20,
                                  batch=8, cpu_smoke=False)
        assert {k: v for k, v in config.items() if base.get(k) != v} == variant, name
        plan = check_train_config(config, f"bench/gpu.py {method} {name}")
        assert plan.finetuning.finetuning_type == keys["finetuning_type"]


def test_the_device_kit_pins_one_version_of_each_package_lf_at_uv_lock():
    """pip --target stops at two versions of one package: each side pins every package exactly, once."""
    import tomllib

    lock = {p["name"]: p["version"] for p in tomllib.loads((REPO / "uv.lock").read_text())["package"] if "version" in p}
    for side in (gpu_kit.locked(gpu_kit.LF_NEEDS), gpu_kit.LLAMAFACTORY):
        names = [pin.split("==")[0] for pin in side]
        assert all(pin.count("==") == 1 for pin in side) and len(set(names)) == len(names)
    assert all(lock[name] == version for name, version in (p.split("==") for p in gpu_kit.locked(gpu_kit.LF_NEEDS)))


def test_gpu_bench_refuses_a_kit_folder_without_its_contents(tmp_path):
    import subprocess

    for flag, expected in (("--llamafactory-site", "no llamafactory package"), ("--data", "no dataset_info.json")):
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--plan-only", flag, str(tmp_path)],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and expected in proc.stderr and str(tmp_path) in proc.stderr
