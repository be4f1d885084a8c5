"""GRPO with a verifiable reward: SmolLM2-135M-Instruct's held-out arithmetic before and after LoRA GRPO.

Run: uv run python bench/grpo.py [--out saves/bench/grpo] [--steps 40] [--heldout 128]

The task is generated here (no download): "What is a + b?" / "a - b" with two-digit operands, the
reference answer the number. Train and held-out prompts share no (a, op, b). Exactly as a user would:
  1. lf eval task=predict on the held-out prompts with the bundled model      -> base reward / correct
  2. lf train stage=grpo finetuning_type=lora reward_funcs=[accuracy]         -> an adapter
  3. lf eval task=predict with adapter_name_or_path                           -> tuned reward / correct
Greedy decoding scores both; the reward is lf-train's `accuracy` (1.0 when the completion's answer --
its \\boxed{}, `#### n` or last number -- equals the reference). Prints one table and writes
results.json; exits with status 1 if held-out correctness does not rise. Tokens generated per second
counts the completions GRPO sampled during training (TRL's `completions/mean_length` x completions per
step) over the training runtime, generation and updates together.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from lf_data.atomic_files import write_json_atomic
from lf_data.cli import main as lf
from lf_train.rewards import accuracy

MODEL = ["model_name_or_path=smollm2-135m-instruct", "template=smollm2"]
QUESTION = "What is {a} {op} {b}? Answer with the number only."


def problems(count_train: int, count_heldout: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Disjoint train and held-out arithmetic rows in alpaca form."""
    rng = random.Random(seed)
    seen: set[tuple[int, str, int]] = set()
    rows: list[dict] = []
    while len(rows) < count_train + count_heldout:
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        rows.append({"instruction": QUESTION.format(a=a, op=op, b=b), "input": "",
                     "output": str(a + b if op == "+" else a - b)})
    return rows[:count_train], rows[count_train:]


def run(argv: list[str]) -> float:
    print("$ lf " + " ".join(argv), flush=True)
    started = time.perf_counter()
    if lf(argv) != 0:
        sys.exit(f"lf {argv[0]} failed")
    elapsed = time.perf_counter() - started
    print(f"  ({elapsed:.0f} s)", flush=True)
    return elapsed


def score(save_dir: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (save_dir / "generated_predictions.jsonl").read_text().splitlines() if line]
    rewards = accuracy([r["predict"] for r in rows], solution=[r["label"] for r in rows])
    return {"prompts": len(rows), "mean_reward": sum(rewards) / len(rows),
            "correct": sum(r == 1.0 for r in rewards) / len(rows)}


def generated_tokens_per_second(adapter: Path, completions_per_step: int) -> float:
    records = [json.loads(line) for line in (adapter / "trainer_log.jsonl").read_text().splitlines() if line]
    tokens = sum(r["completions/mean_length"] * completions_per_step for r in records if "completions/mean_length" in r)
    runtime = json.loads((adapter / "train_results.json").read_text())["train_runtime"]
    return tokens / runtime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("saves/bench/grpo"))
    parser.add_argument("--train-prompts", type=int, default=512)
    parser.add_argument("--heldout", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16, help="completions per step (prompts x num_generations)")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-base", action="store_true", help="keep the base model's predictions of an earlier run")
    args = parser.parse_args()

    train, heldout = problems(args.train_prompts, args.heldout, args.seed)
    data = args.out / "data"
    write_json_atomic(data / "arith_train.json", train)
    write_json_atomic(data / "arith_heldout.json", heldout)
    write_json_atomic(data / "dataset_info.json", {"arith_train": {"file_name": "arith_train.json"},
                                                   "arith_heldout": {"file_name": "arith_heldout.json"}})
    predict = ["eval", "task=predict", *MODEL, "dataset=arith_heldout", f"dataset_dir={data}", "cutoff_len=256",
               f"max_new_tokens={args.max_new_tokens}", "do_sample=false", "batch_size=32", "overwrite_save_dir=true"]
    if not (args.reuse_base and (args.out / "base" / "generated_predictions.jsonl").is_file()):
        run([*predict, f"save_dir={args.out / 'base'}"])
    adapter = args.out / "adapter"
    train_seconds = run(["train", *MODEL, "stage=grpo", "finetuning_type=lora", "lora_target=all", "lora_rank=16",
                         "lora_alpha=32", "dataset=arith_train", f"dataset_dir={data}", "cutoff_len=256",
                         f"output_dir={adapter}", "overwrite_output_dir=true",
                         f"per_device_train_batch_size={args.batch}", f"num_generations={args.generations}",
                         f"max_completion_length={args.max_new_tokens}", "reward_funcs=[accuracy]", "beta=0.0",
                         "loss_type=dapo", "temperature=1.0", f"learning_rate={args.learning_rate}",
                         "lr_scheduler_type=constant", f"max_steps={args.steps}", "logging_steps=1",
                         f"save_steps={args.steps}", f"seed={args.seed}", "disable_tqdm=true"])
    run([*predict, f"save_dir={args.out / 'tuned'}", f"adapter_name_or_path={adapter}"])

    base, tuned = score(args.out / "base"), score(args.out / "tuned")
    speed = generated_tokens_per_second(adapter, args.batch)
    print(f"\nSmolLM2-135M-Instruct, LoRA GRPO ({args.steps} steps x {args.batch} completions, "
          f"{args.generations} per prompt), held-out arithmetic ({base['prompts']} prompts, greedy)")
    print(f"{'':<28} {'base':>8} {'GRPO':>8}")
    print(f"{'mean reward (accuracy)':<28} {base['mean_reward']:>8.3f} {tuned['mean_reward']:>8.3f}")
    print(f"{'share correct':<28} {base['correct']:>8.1%} {tuned['correct']:>8.1%}")
    print(f"tokens generated per second while training: {speed:.1f} (training took {train_seconds:.0f} s)")
    write_json_atomic(args.out / "results.json", {"base": base, "grpo": tuned, "generated_tokens_per_second": speed,
                                                  "train_seconds": train_seconds, "argv": sys.argv[1:]})
    if tuned["correct"] <= base["correct"]:
        print("held-out correctness did not rise")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
