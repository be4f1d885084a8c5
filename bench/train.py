"""LoRA SFT throughput: padding paid for or not.

Run: uv run python bench/train.py [--steps 6] [--models tiny,smollm2] [--data aclsum|identity]
For each model, trains the same LoRA SFT steps four ways — random batches padded to the longest
row, batches grouped by length (`train_sampling_strategy: group_by_length`), neat packing
(`neat_packing: true`) and padding-free batches (LF's default: the examples end to end in one row,
SDPA per example) — and prints tokens/s counting only real tokens, the share of padding, the
process's peak RSS so far (the variants run in this order), and model FLOP utilisation against a matmul measured on this machine
(model FLOPs = 6 x parameters x real tokens, the usual convention). The data: alpaca rows of real
text with answers of log-uniform length up to cutoff 512 (bench/vs_llamafactory.py's), or the short
identity rows.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def matmul_flops(size: int = 1024, repeat: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * size**3 * repeat / (time.perf_counter() - start)


def batches(rows: list[dict], size: int, grouped: bool, seed: int = 0) -> list[list[dict]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    if grouped:  # sort within windows of 50 batches, then shuffle the batches: what a length sampler does
        window = size * 50
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s:s + window], key=lambda i: len(rows[i]["input_ids"]))]
    groups = [[rows[i] for i in order[s:s + size]] for s in range(0, len(order), size)]
    random.Random(seed).shuffle(groups)
    return groups


def run(model_ref: str, steps: int, batch_size: int, peak: float, data_dir: Path, dataset: str) -> list[tuple]:
    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model, load_tokenizer, resolve_model
    from lf_models.padding_free import use_padding_free_attention
    from lf_models.precision import choose_precision
    from lf_train.collators import SupervisedCollator

    model_args = ModelArguments(model_name_or_path=model_ref)
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    results = []
    for name, neat, grouped, flat in (("random, padded", False, False, False), ("grouped by length", False, True, False),
                                      ("neat packing", True, False, False), ("padding-free", False, False, True)):
        data = build_dataset(DataArguments(dataset=[dataset], dataset_dir=str(data_dir), template="chatml",
                                           cutoff_len=512, neat_packing=neat, max_samples=4000), tokenizer, "sft").train_dataset
        rows = list(data)
        torch.manual_seed(0)
        model = load_model(model_args, FinetuningArguments(lora_target=["all"]), choose_precision(), True,
                           source=source)
        if flat:
            use_padding_free_attention(model)
        params = sum(p.numel() for p in model.parameters())
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        collate = SupervisedCollator(tokenizer.pad_token_id, neat_packing=neat, padding_free=flat)
        plan = batches(rows, 1 if neat else batch_size, grouped)[:steps + 1]
        real = padded = 0
        for i, group in enumerate(plan):
            if i == 1:  # the first step warms up kernels and allocations: not timed
                start = time.perf_counter()
            batch = collate(group)
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if i >= 1:
                real += sum(len(r["input_ids"]) for r in group)
                padded += batch["input_ids"].numel()
        seconds = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results.append((model_ref, name, real / seconds, 1 - real / padded, rss, 6 * params * real / seconds / peak))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--models", default="tiny,smollm2-135m-instruct")
    parser.add_argument("--data", choices=["aclsum", "identity"], default="aclsum")
    ns = parser.parse_args()
    import datasets

    datasets.disable_progress_bars()
    peak = matmul_flops()
    refs = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, dataset = REPO / "data", "identity"
        if ns.data == "aclsum":
            from vs_llamafactory import corpus, write_data

            data_dir, dataset = Path(tmp) / "data", "bench_sft"
            data_dir.mkdir()
            write_data(data_dir, corpus())
        for ref in ns.models.split(","):
            if ref == "tiny":
                sys.path.insert(0, str(REPO / "tests"))
                from conftest import build_tiny_model

                from lf_models.args import ModelArguments
                from lf_models.loader import load_tokenizer

                tokenizer = load_tokenizer(ModelArguments(model_name_or_path="smollm2-135m-instruct"))
                ref = str(build_tiny_model(Path(tmp) / "tiny", "llama", tokenizer))
            refs += run(ref, ns.steps, ns.batch_size, peak, data_dir, dataset)
    print(f"matmul peak on this machine: {peak / 1e9:.1f} GFLOP/s")
    print(f"{'model':<24} {'batching':<20} {'real tok/s':>10} {'padding':>8} {'peak RSS MB':>12} {'MFU':>6}")
    for ref, name, tps, pad, rss, mfu in refs:
        label = "tiny llama" if "tiny" in ref else Path(ref).name[:24]
        print(f"{label:<24} {name:<20} {tps:>10.0f} {pad:>8.1%} {rss:>12.0f} {mfu:>6.1%}")


if __name__ == "__main__":
    main()
