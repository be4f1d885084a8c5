"""The fused LM head on a CPU: torch's linear_cross_entropy (LF's default there) and TRL's at each tile
width, then whole training runs with and without the fused head.

Run: uv run python bench/fused_head.py [--tokens 1024] [--widths 32768,8192,4096,2048] [--reps 2] [--no-runs]

Part 1, the head alone, each case in a fresh process: 1,024 tokens x SmolLM2's 49,152-entry vocabulary
and 576-wide hidden states, forward and backward of the mean token loss, as full fp32 logits with
cross-entropy, as torch's `linear_cross_entropy` in LF's chunks (`lf_train.fused_head.chunk_rows`: 512 token
rows here) and in torch's own (sized like the input: 32 rows), and as TRL's `_ChunkedLogProbFunction` (the
kernel behind `add_fused_lm_head`) at each vocabulary tile width. Peak: the process's peak RSS during
the call minus its RSS before (freed tensors leave the resident set: MALLOC_MMAP_THRESHOLD_=131072). This is why LF narrows TRL's 32,768-wide tiles to
4,096 on a CPU (`lf_train.losses.CPU_FUSED_HEAD_CHUNK`): TRL's torch fallback keeps about nine tiles alive.
2026-12-06, 2 cores, 1,024 tokens: logits 0.590 GiB 0.75 s; torch, LF's chunks 0.130 GiB 0.63 s; torch's
chunks 0.013 GiB 1.70 s; TRL 32768: 1.065 GiB 1.83 s; TRL 4096: 0.147 GiB 2.07 s (the same loss, 10.93631).

Part 2, training: SmolLM2-135M-Instruct, stage pt on bench/estimate.py's packed text, 256-token rows,
gradient checkpointing, 6 steps; LoRA at batch 4 and full at batch 2, `fused_lm_head` false and true,
alternated `--reps` times (bench/estimate.py's `measure`: peak RSS while training minus the RSS after
imports; tokens/s over the steps after the first). Prints the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from estimate import MMAP_THRESHOLD, _status, measure, row_config, write_data  # noqa: E402

VOCAB, HIDDEN = 49152, 576


def head(width: int, tokens: int) -> None:
    """One case of part 1 (width 0: full logits); prints a RESULT line."""
    import torch
    from trl.trainer.utils import _ChunkedLogProbFunction

    torch.manual_seed(0)
    weight = torch.randn(VOCAB, HIDDEN) * 0.02
    hidden = torch.randn(tokens, HIDDEN, requires_grad=True)
    labels = torch.randint(0, VOCAB, (tokens,))
    start, base = time.perf_counter(), _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    if width < 0:  # torch's linear_cross_entropy in LF's chunks (lf_train.fused_head)
        from lf_train.fused_head import chunk_rows

        loss = torch.nn.functional.linear_cross_entropy(
            hidden, weight, labels, options=torch.nn.LinearCrossEntropyOptions(
                chunking_method=None if width == -1 else "auto", batch_chunk_size=chunk_rows(VOCAB) if width == -1 else None))
    elif width:
        log_probs = _ChunkedLogProbFunction.apply(hidden, weight, None, labels, 1.0, width, None, 1.0,
                                                  ("log_probs",))[0]
        loss = -log_probs.mean()
    else:
        loss = torch.nn.functional.cross_entropy(hidden @ weight.t(), labels)
    loss.backward()
    print("RESULT " + json.dumps({"peak": (_status("VmHWM") - base) / 2**30, "seconds": time.perf_counter() - start,
                                  "loss": loss.item()}), flush=True)


def run_head(width: int, tokens: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    proc = subprocess.run([sys.executable, __file__, "--head", str(width), "--tokens", str(tokens)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--widths", default="32768,8192,4096,2048")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--no-runs", action="store_true", help="part 1 only")
    parser.add_argument("--head", type=int, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.head is not None:
        head(ns.head, ns.tokens)
        return

    print(f"Part 1: {ns.tokens} tokens x {VOCAB} vocabulary, {HIDDEN} hidden, forward + backward")
    print(f"{'head':<24} {'peak GiB':>8} {'seconds':>8} {'loss':>9}")
    names = {0: "full fp32 logits", -1: "torch LCE, LF's chunks", -2: "torch LCE, its chunks"}
    for width in [0, -1, -2, *(int(w) for w in ns.widths.split(","))]:
        r = run_head(width, ns.tokens)
        name = names.get(width, f"TRL fused, tiles {width}")
        print(f"{name:<24} {r['peak']:>8.3f} {r['seconds']:>8.2f} {r['loss']:>9.5f}", flush=True)
    if ns.no_runs:
        return

    print("\nPart 2: SmolLM2-135M-Instruct, stage pt, 256-token rows, gradient checkpointing, 6 steps")
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        write_data(data, 256 * 4 * 10)
        for _ in range(ns.reps):
            for fused in (False, True):
                for method, batch in (("lora", 4), ("full", 2)):
                    config = row_config("smollm2-135m-instruct", method, batch, True, 6, 256, data, root / "out")
                    config["fused_lm_head"] = fused
                    got = measure(config, 1800, False)
                    if got is None:
                        continue
                    results.setdefault(f"{method} bs{batch} fused={str(fused).lower()}", []).append(
                        ((got["peak"] - got["baseline"]) / 2**30, got["tokens_per_second"]))
    print(f"{'run':<24} {'peak GiB':>8} {'tokens/s':>8}")
    for key, values in results.items():
        print(f"{key:<24} {statistics.median(v[0] for v in values):>8.3f} "
              f"{statistics.median(v[1] for v in values):>8.1f}")


if __name__ == "__main__":
    main()
