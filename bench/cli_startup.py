"""How long the `lf` command takes to start, and to answer a wrong config, next to a bare interpreter
and an `import torch`.

Run: uv run python bench/cli_startup.py [--runs N] [--llamafactory PATH/TO/llamafactory-cli]
The lf commands must stay close to `python -c pass`: `lf --help`, `lf version` and every config error
that needs no weights (a typo, a value out of range, an impossible combination) import no torch,
transformers or datasets. With --llamafactory, the same three wrong configs go to LlamaFactory's
`llamafactory-cli train` (installed in its own virtual environment, see shared/DESIGN.md) for scale.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LF = str(Path(sys.executable).parent / "lf")
RECIPE = str(REPO / "examples" / "quickstart.yaml")
WRONG = {  # what each wrong config adds to the quickstart recipe, and a word its error must contain
    "typo (lora_rnak=4)": (["lora_rnak=4"], "lora_rank"),
    "bad value (learning_rate=-1)": (["learning_rate=-1"], "learning_rate"),
    "impossible (4-bit + full tuning)": (["quantization_bit=4", "finetuning_type=full"], "quantis"),
}


def timed(cmd: list[str], runs: int, expect: str | None) -> tuple[float, float]:
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)  # also warms the page cache
    if expect is not None and expect not in first.stdout + first.stderr:
        raise SystemExit(f"{' '.join(cmd)} did not answer with {expect!r}:\n{first.stderr[-2000:]}")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--llamafactory", help="path of llamafactory-cli in LlamaFactory's own environment")
    ns = parser.parse_args()
    variants: dict[str, tuple[list[str], str | None]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        "lf --help": ([LF, "--help"], "commands"),
        "lf version": ([LF, "version"], "lf-data"),
    }
    for name, (overrides, expect) in WRONG.items():
        variants[f"lf train: {name}"] = ([LF, "train", RECIPE, "output_dir=/tmp/lf-bench-never", *overrides], expect)
        if ns.llamafactory:
            variants[f"llamafactory-cli train: {name}"] = (
                [ns.llamafactory, "train", RECIPE, *overrides], None)
    variants["python -c 'import torch' (for scale)"] = ([sys.executable, "-c", "import torch"], None)
    rows = [(name, *timed(cmd, ns.runs, expect)) for name, (cmd, expect) in variants.items()]
    baseline = rows[0][1]
    print(f"{'command':<52} {'median ms':>10} {'min ms':>8} {'x python':>9}")
    for name, median, best in rows:
        print(f"{name:<52} {median * 1000:>10.0f} {best * 1000:>8.0f} {median / baseline:>9.1f}")


if __name__ == "__main__":
    main()
