"""bench/vs_llamafactory.py's shared workspace (LlamaFactory itself is not installed in CI): the data it
writes and the YAML both systems get pass LF's own checks, with padding real enough to measure."""

import json
import sys
from pathlib import Path

import pytest

from lf_train.run import parse_train_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import vs_llamafactory as bench  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vs_llamafactory")
    texts = bench.corpus()
    bench.write_data(folder, texts, sft_rows=500)
    return folder, texts


def test_the_rows_are_real_text_of_realistic_lengths(workspace):
    folder, texts = workspace
    assert len(texts) == 250  # the aclsum papers
    sft = json.loads((folder / "bench_sft.json").read_text())
    words = sorted(len(row["output"].split()) for row in sft)
    assert len(sft) == 500 and words[0] >= 12 and words[-1] > 200 and words[len(words) // 2] < 120  # log-uniform
    pairs = json.loads((folder / "bench_dpo.json").read_text())
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["bench_dpo"]["ranking"] and info["bench_pt"]["columns"] == {"prompt": "text"}


@pytest.mark.parametrize("work", sorted(bench.WORKLOADS))
def test_each_workload_config_passes_lfs_check(work, workspace, tiny_llama, tmp_path):
    folder, _ = workspace
    config = bench.train_config(work, str(tiny_llama), folder, tmp_path / "out", small=True)
    plan = parse_train_config(config)
    stage, _, steps, batch = bench.WORKLOADS[work]
    assert plan.train.stage == stage and plan.training_args.per_device_train_batch_size == batch
    # one epoch over steps x batch rows, or (pt, packed) steps batches
    assert (plan.data.max_samples == steps * batch) if stage != "pt" else (plan.training_args.max_steps == steps)
