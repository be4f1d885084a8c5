"""ROUGE of SmolLM2-135M-Instruct summarising ACL papers, before and after a short LoRA fine-tune.

Run: uv run python bench/summarize.py [--out saves/bench/summarize] [--epochs 2] [--test-samples 0]
Reads the `aclsum` package's JSONL files directly (MIT; install it with `uv pip install aclsum`):
each paper has reference one-sentence summaries of its challenge, approach and outcome. One row per
paper and aspect: the instruction names the aspect, the input is the paper's abstract, the answer is
the reference sentence. The train split trains, the test split scores; they share no paper.
Then, exactly as a user would:
  1. lf eval task=predict on the test rows with the bundled model        -> base ROUGE / BLEU
  2. lf train stage=sft finetuning_type=lora on the train rows           -> an adapter
  3. lf eval task=predict with adapter_name_or_path                      -> fine-tuned ROUGE / BLEU
and prints both as a table. Exits with status 1 if the fine-tuned ROUGE-L does not beat the base.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

from lf_data.atomic_files import write_json_atomic
from lf_data.cli import main as lf

ASPECTS = ("challenge", "approach", "outcome")
INSTRUCTION = "Summarize the {aspect} of this paper in one sentence."
MODEL = ["model_name_or_path=smollm2-135m-instruct", "template=smollm2"]
METRICS = ("predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l")


def aclsum_dir() -> Path:
    spec = importlib.util.find_spec("aclsum")  # not imported: its module needs extra packages we do not use
    if spec is None or not spec.submodule_search_locations:
        sys.exit("aclsum is not installed: `uv pip install aclsum`")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset"


def detokenize(text: str) -> str:
    """The abstracts come tokenised ("workflow ." / "( MT )"); join punctuation back."""
    text = re.sub(r"\s+([.,;:!?)\]%])", r"\1", text)
    return re.sub(r"([(\[])\s+", r"\1", text)


def papers(path: Path) -> list[tuple[dict, str]]:
    """(paper, its detokenised abstract) for each line of an aclsum split (bench/paper_tables.py's corpus too)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            paper = json.loads(line)
            rows.append((paper, detokenize(" ".join(paper["sentences"]["abstract"]))))
    return rows


def alpaca_rows(path: Path) -> list[dict[str, str]]:
    rows = []
    for paper, abstract in papers(path):
        for aspect in ASPECTS:
            rows.append({"instruction": INSTRUCTION.format(aspect=aspect), "input": abstract,
                         "output": paper["summary"][aspect].strip()})
    return rows


def write_data(out: Path) -> tuple[int, int]:
    source = aclsum_dir()
    train, test = alpaca_rows(source / "train.jsonl"), alpaca_rows(source / "test.jsonl")
    data = out / "data"
    write_json_atomic(data / "aclsum_train.json", train)
    write_json_atomic(data / "aclsum_test.json", test)
    write_json_atomic(data / "dataset_info.json", {"aclsum_train": {"file_name": "aclsum_train.json"},
                                                   "aclsum_test": {"file_name": "aclsum_test.json"}})
    return len(train), len(test)


def run(argv: list[str]) -> None:
    print("$ lf " + " ".join(argv), flush=True)
    started = time.perf_counter()
    if lf(argv) != 0:
        sys.exit(f"lf {argv[0]} failed")
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("saves/bench/summarize"))
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--test-samples", type=int, default=0, help="score only the first N test rows (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--reuse-base", action="store_true", help="keep the base model's scores from an earlier run")
    parser.add_argument("--reuse-adapter", action="store_true", help="keep the adapter of an earlier finished run")
    args = parser.parse_args()
    n_train, n_test = write_data(args.out)
    print(f"aclsum: {n_train} training rows, {n_test} test rows (papers x {len(ASPECTS)} aspects)")

    predict = ["eval", "task=predict", *MODEL, "dataset=aclsum_test", f"dataset_dir={args.out / 'data'}",
               "cutoff_len=1024", f"max_new_tokens={args.max_new_tokens}", "batch_size=8", "overwrite_save_dir=true"]
    if args.test_samples:
        predict.append(f"max_samples={args.test_samples}")
    if not (args.reuse_base and (args.out / "base" / "predict_results.json").is_file()):
        run([*predict, f"save_dir={args.out / 'base'}"])
    adapter = args.out / "adapter"
    if not (args.reuse_adapter and (adapter / "train_results.json").is_file()):
        run(["train", *MODEL, "stage=sft", "finetuning_type=lora", "lora_target=all", "lora_rank=8",
             "lora_alpha=16", "dataset=aclsum_train", f"dataset_dir={args.out / 'data'}", "cutoff_len=1024",
             f"output_dir={adapter}", "overwrite_output_dir=true", "per_device_train_batch_size=2",
             "gradient_accumulation_steps=4", f"learning_rate={args.learning_rate}", f"num_train_epochs={args.epochs}",
             "lr_scheduler_type=cosine", "warmup_ratio=0.1", "logging_steps=5", "save_steps=1000", "seed=42",
             "disable_tqdm=true"])
    run([*predict, f"save_dir={args.out / 'tuned'}", f"adapter_name_or_path={adapter}"])

    base, tuned = (json.loads((args.out / name / "predict_results.json").read_text()) for name in ("base", "tuned"))
    print(f"\nSmolLM2-135M-Instruct on aclsum test ({base['predict_samples']} rows), LoRA on {n_train} rows, "
          f"{args.epochs:g} epochs")
    print(f"{'metric':<10} {'base':>8} {'LoRA':>8} {'gain':>8}")
    for key in METRICS:
        name = key.removeprefix("predict_")
        print(f"{name:<10} {base[key]:>8.2f} {tuned[key]:>8.2f} {tuned[key] - base[key]:>+8.2f}")
    if tuned["predict_rouge-l"] <= base["predict_rouge-l"]:
        print("the fine-tuned model does not beat the base model on ROUGE-L")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
