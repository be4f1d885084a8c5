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


def test_the_device_kit_pins_lf_at_uv_lock_and_llamafactory_at_its_ceilings():
    pins = dict(pin.split("==") for pin in gpu_kit.locked(gpu_kit.LF_NEEDS))
    assert set(pins) == set(gpu_kit.LF_NEEDS) and pins["trl"].split(".")[0] == "1"
    theirs = dict(pin.split("==") for pin in gpu_kit.LLAMAFACTORY)
    assert theirs["llamafactory"] == "0.9.5" and theirs["transformers"] == "5.6.0" and theirs["trl"] == "0.24.0"
