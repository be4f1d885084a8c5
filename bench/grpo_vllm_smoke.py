"""GPU smoke check of GRPO generating with vLLM (TRL's colocate mode) against transformers' generate.

Run on a CUDA machine with `pip install 'lf-train[vllm]'`:
    uv run python bench/grpo_vllm_smoke.py [--out saves/bench/grpo_vllm] [--steps 5]
Trains SmolLM2-135M-Instruct with LoRA GRPO on the repository's data/arithmetic.json for a few steps,
once with `use_vllm: true` (vllm_mode colocate) and once without, and prints per variant: steps, mean
reward, completion tokens generated per second and the training time. Exits 1 if a run fails or logs
no reward. This machine has no GPU: the CPU refuses use_vllm before loading anything (tested).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lf_data.cli import main as lf

BASE = ["model_name_or_path=smollm2-135m-instruct", "template=smollm2", "stage=grpo", "finetuning_type=lora",
        "lora_target=all", "dataset=arithmetic", "dataset_dir=data", "cutoff_len=256", "reward_funcs=[accuracy]",
        "num_generations=8", "per_device_train_batch_size=16", "max_completion_length=64", "beta=0.0",
        "learning_rate=1e-5", "logging_steps=1", "overwrite_output_dir=true", "bf16=true", "report_to=none"]


def variant(name: str, out: Path, steps: int, extra: list[str]) -> dict[str, float]:
    folder = out / name
    argv = ["train", *BASE, f"max_steps={steps}", f"save_steps={steps}", f"output_dir={folder}", *extra]
    print("$ lf " + " ".join(argv), flush=True)
    started = time.perf_counter()
    if lf(argv) != 0:
        sys.exit(f"{name}: lf train failed")
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (folder / "trainer_log.jsonl").read_text().splitlines() if line]
    steps_logged = [r for r in records if "rewards/mean" in r]
    if not steps_logged:
        sys.exit(f"{name}: no reward was logged")
    tokens = sum(r.get("completions/mean_length", 0.0) * 16 for r in steps_logged)
    return {"steps": len(steps_logged), "reward": sum(r["rewards/mean"] for r in steps_logged) / len(steps_logged),
            "tokens_per_second": tokens / seconds, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("saves/bench/grpo_vllm"))
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rows = {"transformers": variant("transformers", args.out, args.steps, []),
            "vllm colocate": variant("vllm", args.out, args.steps,
                                     ["use_vllm=true", "vllm_mode=colocate", "vllm_gpu_memory_utilization=0.3"])}
    print(f"\n{'generation':<16} {'steps':>6} {'reward':>8} {'gen tok/s':>10} {'seconds':>8}")
    for name, row in rows.items():
        print(f"{name:<16} {row['steps']:>6} {row['reward']:>8.3f} {row['tokens_per_second']:>10.1f} "
              f"{row['seconds']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
