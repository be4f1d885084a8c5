"""SFT preprocessing speed next to the raw speed of the same tokenizer on the same text.

Run: uv run python bench/preprocess.py [--rows 10000] [--workers N] [--tokenizer REF]
Tokenises N alpaca-style rows for SFT through the full pipeline (align, template, labels, filter,
cache write) and batch-encodes the same text with no templating. Target: the pipeline's throughput
(tokens/s) within 1.5x of the raw tokenizer's; the wall-time ratio is printed too (the pipeline
encodes more tokens: the template's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

WORDS = ["the", "model", "learns", "to", "answer", "questions", "about", "data", "training", "tokens", "language", "fine", "tuning", "adapter", "rank", "weight", "gradient", "batch", "loss", "sequence", "template", "assistant", "user", "system", "response", "prompt"]


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    return [{"instruction": sentence(5, 30), "input": sentence(0, 20) if rng.random() < 0.4 else "",
             "output": " ".join(sentence(5, 25) for _ in range(rng.randint(1, 4)))} for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--tokenizer", default="smollm2-135m-instruct")
    ns = parser.parse_args()

    import datasets

    datasets.disable_progress_bars()
    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_data.render import load_tokenizer

    tokenizer, default_template = load_tokenizer(ns.tokenizer)
    rows = make_rows(ns.rows)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LF_CACHE_HOME"] = str(Path(tmp) / "cache")
        (Path(tmp) / "rows.json").write_text(json.dumps(rows))
        (Path(tmp) / "dataset_info.json").write_text(json.dumps({"rows": {"file_name": "rows.json"}}))
        texts = [r["instruction"] + "\n" + r["input"] + r["output"] for r in rows]
        start = time.perf_counter()
        raw_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        raw = time.perf_counter() - start
        args = DataArguments(dataset=["rows"], dataset_dir=tmp, template=default_template or "chatml",
                             cutoff_len=4096, preprocessing_num_workers=ns.workers)
        start = time.perf_counter()
        module = build_dataset(args, tokenizer, "sft")
        full = time.perf_counter() - start
    raw_tokens = sum(map(len, raw_ids))
    tokens = sum(map(len, module.train_dataset["input_ids"]))
    print(f"{'variant':<34} {'seconds':>8} {'rows/s':>9} {'tokens/s':>10}")
    print(f"{'raw batch encode (no template)':<34} {raw:>8.2f} {ns.rows / raw:>9.0f} {raw_tokens / raw:>10.0f}")
    print(f"{'lf-data sft pipeline':<34} {full:>8.2f} {ns.rows / full:>9.0f} {tokens / full:>10.0f}")
    print(f"pipeline / raw time: {full / raw:.2f}x  (workers: {ns.workers or 1}, tokenizer: {ns.tokenizer})")
    print(f"raw / pipeline tokens per second: {(raw_tokens / raw) / (tokens / full):.2f}x  "
          f"(the pipeline also encodes the template's tokens: {tokens / raw_tokens:.2f}x as many)")


if __name__ == "__main__":
    main()
