"""How long `lf --help` and `lf version` take next to a bare interpreter and an `import torch`.

Run: uv run python bench/cli_startup.py [--runs N]
The lf commands must stay close to `python -c pass`: they import no torch, transformers or datasets.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

LF = str(Path(sys.executable).parent / "lf")
VARIANTS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "lf --help": [LF, "--help"],
    "lf version": [LF, "version"],
    "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    rows = []
    for name, cmd in VARIANTS.items():
        subprocess.run(cmd, capture_output=True, check=True)  # warm the page cache
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        rows.append((name, statistics.median(times), min(times)))
    baseline = rows[0][1]
    print(f"{'command':<40} {'median ms':>10} {'min ms':>8} {'x python':>9}")
    for name, median, best in rows:
        print(f"{name:<40} {median * 1000:>10.0f} {best * 1000:>8.0f} {median / baseline:>9.1f}")


if __name__ == "__main__":
    main()
