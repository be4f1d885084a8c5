"""`lf estimate` against real runs: predicted vs measured peak memory and tokens/s, and the paper's Table 4.

Run: uv run python bench/estimate.py [--models tiny,smollm2-135m-instruct] [--methods full,freeze,lora,...]
     [--batch-sizes 2,4] [--gc off,on] [--steps 4] [--cutoff-len 256] [--paper-only] [--no-paper]

Each measured row is a short `lf train` run (stage pt on packed synthetic text, so every sequence is
exactly cutoff_len tokens) in a fresh subprocess on this machine's CPU. Memory: the process's peak
resident set size while `Trainer.train` runs (the high-water mark is reset when training starts, so
loading transients do not count) minus its resident size after the libraries were imported and before
anything was loaded; the prediction is the estimate's peak minus the libraries' share of its framework
overhead (`CPU_LIBRARIES_GIB`, which that baseline holds). The child runs with
MALLOC_MMAP_THRESHOLD_=131072, so freed tensors leave the resident set and the peak RSS is the CPU's
counterpart of torch.cuda.max_memory_allocated; --glibc-default measures with glibc's own threshold,
whose heap keeps freed blocks (0.3-0.5 GiB more on SmolLM2-135M: the estimate notes it). Tokens/s: steps after the first, timed
between step ends. Then the paper's Table 4 (LlamaFactory, A100 40GB) predicted from the same
estimator given the architectures as dicts (no hub here).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METHODS: dict[str, dict[str, Any]] = {
    "full": {"finetuning_type": "full"},
    "freeze": {"finetuning_type": "freeze", "freeze_trainable_layers": 2},
    "lora": {"finetuning_type": "lora", "lora_rank": 8, "lora_target": "all"},
    "qlora": {"finetuning_type": "lora", "lora_rank": 8, "lora_target": "all", "quantization_bit": 4},
    "galore": {"finetuning_type": "full", "use_galore": True, "galore_rank": 16, "galore_target": "all"},
    "badam": {"finetuning_type": "full", "use_badam": True, "badam_mode": "layer", "badam_switch_mode": "ascending"},
}
DEFAULT_METHODS = "full,freeze,lora,galore,badam,qlora"
MMAP_THRESHOLD = 131072
"""Every allocation above 128 KiB gets its own mapping, returned when freed (glibc's default raises the
threshold up to 32 MiB as blocks are freed, and the heap then keeps freed activations resident)."""
WORDS = ["rivers", "mountains", "cities", "model", "reads", "long", "text", "about", "while", "loader", "packs",
         "every", "example", "into", "blocks", "of", "equal", "length", "so", "each", "step", "sees", "the", "same",
         "number", "tokens", "and", "memory", "run", "compared", "with", "its", "estimate"]


# -- one measured run, in a child process ------------------------------------------------------------

def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def import_libraries() -> None:
    """What a training run imports, before the baseline is read (bench/paper_tables.py imports them once
    and forks each run from there)."""
    import lf_train.run  # noqa: F401
    import lf_train.stages.sft  # noqa: F401

    for optional in ("peft", "galore_torch", "badam", "bitsandbytes", "datasets"):
        with contextlib.suppress(ImportError):
            __import__(optional)


def child(config: dict[str, Any]) -> None:
    """Train `config` and print one JSON line: baseline RSS, peak RSS during training, tokens/s, trainable
    parameters, and on a GPU torch.cuda.max_memory_allocated during training."""
    import torch
    import transformers

    import_libraries()
    torch.ones(64, 64) @ torch.ones(64, 64)  # thread pools up
    baseline = _status("VmRSS")
    result: dict[str, Any] = {"baseline": baseline}
    original = transformers.Trainer.train

    def reset_peak() -> None:
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from the current RSS
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    class Timer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 0:  # eval_on_start (bench/paper_tables.py): not part of training's peak
                reset_peak()

    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        from lf_models.loader import count_parameters

        timer = Timer()
        self.add_callback(timer)
        result["loaded"] = _status("VmRSS")
        result["trainable"] = count_parameters(self.model)[0]
        reset_peak()  # loading does not count
        out = original(self, *args, **kwargs)
        result["peak"] = _status("VmHWM")
        if torch.cuda.is_available():  # the GPU's own peak: torch's allocator statistics
            result["cuda_peak"] = torch.cuda.max_memory_allocated()
        (t0, n0), (t1, n1) = timer.marks[0], timer.marks[-1]
        result["tokens_per_second"] = (n1 - n0) / (t1 - t0) if t1 > t0 else None
        result["tokens_per_step"] = (n1 - n0) / max(len(timer.marks) - 1, 1)
        return out

    transformers.Trainer.train = train
    from lf_train.run import run_train

    run_train(config)
    print("RESULT " + json.dumps(result), flush=True)


# -- the rows -----------------------------------------------------------------------------------------

def write_data(folder: Path, tokens_needed: int) -> None:
    rng = random.Random(0)
    rows, words = [], 0
    while words < tokens_needed * 1.3:
        text = " ".join(rng.choice(WORDS) for _ in range(400))
        rows.append({"text": text})
        words += 400
    (folder / "texts.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"texts": {"file_name": "texts.json",
                                                                    "columns": {"prompt": "text"}}}))


def tiny_model(folder: Path) -> str:
    """The tests' tiny Llama (hidden 32, 2 layers) with SmolLM2's tokenizer (49,152 tokens): the logits
    dominate its memory."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model

    from lf_models.args import ModelArguments
    from lf_models.loader import load_tokenizer

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path="smollm2-135m-instruct"))
    return str(build_tiny_model(folder / "tiny", "llama", tokenizer))


def row_config(model: str, method: str, batch: int, gc: bool, steps: int, cutoff: int, data: Path,
               out: Path) -> dict[str, Any]:
    return {"model_name_or_path": model, "stage": "pt", "dataset": "texts", "dataset_dir": str(data),
            "cutoff_len": cutoff, "output_dir": str(out), "per_device_train_batch_size": batch,
            "gradient_checkpointing": gc, "max_steps": steps, "logging_steps": 1, "save_steps": 1000,
            "learning_rate": 1e-4, "report_to": "none", "disable_tqdm": True, "plot_loss": False,
            "overwrite_output_dir": True, "template": "empty", **METHODS[method]}


def predict(config: dict[str, Any], device: Any) -> Any:
    from lf_train.estimate import estimate_plan, read_model_config
    from lf_train.plan import check_train_config, finish_plan

    plan = finish_plan(check_train_config(config))
    return estimate_plan(plan, device, 1, model_config=read_model_config(plan.model))


def measure(config: dict[str, Any], timeout: int, glibc_default: bool) -> dict[str, Any] | None:
    env = {**os.environ, "LF_VERBOSITY": "quiet", "TOKENIZERS_PARALLELISM": "false"}
    if not glibc_default:  # freed blocks go back to the system: RSS follows the tensors torch holds
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    print(f"   failed ({proc.returncode}): {' | '.join(tail)}", file=sys.stderr)
    return None


def qlora_works() -> bool:
    """Whether bitsandbytes quantises and trains a 4-bit layer on this machine's CPU."""
    code = ("import torch, bitsandbytes as bnb; l = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32); "
            "l = l.to('cpu'); x = torch.randn(2, 64, requires_grad=True); l(x).sum().backward(); print('ok')")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return proc.stdout.strip().endswith("ok")


def run_rows(ns: argparse.Namespace) -> None:
    from lf_train.estimate import CPU_LIBRARIES_GIB, GIB, _time_matmul, cpu_device

    device = dataclasses.replace(cpu_device(), peak_tflops=_time_matmul("cpu"))  # now, as the rows run
    print(f"device: {device.name}: {device.peak_tflops * 1000:.0f} GFLOP/s fp32 matmul (measured now), "
          f"utilisation {device.utilisation:.0%}, {device.memory_gib:.1f} GiB")
    methods = ns.methods.split(",")
    if "qlora" in methods and not qlora_works():
        print("qlora: bitsandbytes cannot train a 4-bit layer on this CPU; its rows are skipped")
        methods.remove("qlora")
    header = (f"{'model':<10} {'method':<7} {'bs':>2} {'gc':>3} | {'pred GiB':>8} {'meas GiB':>8} {'err':>6} | "
              f"{'pred tok/s':>10} {'meas tok/s':>10} {'err':>6}")
    print(header)
    print("-" * len(header))
    rows, baselines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        cutoff, batches = ns.cutoff_len, [int(b) for b in ns.batch_sizes.split(",")]
        write_data(data, cutoff * max(batches) * (ns.steps + 2))
        for model in ns.models.split(","):
            ref = tiny_model(root) if model == "tiny" else model
            for method in methods:
                for batch in batches:
                    for gc in [g == "on" for g in ns.gc.split(",")]:
                        config = row_config(ref, method, batch, gc, ns.steps, cutoff, data, root / "out")
                        predicted = predict(config, device)
                        if ns.dry_run:
                            print(f"{model[:10]:<10} {method:<7} {batch:>2} {'on' if gc else 'off':>3} | "
                                  f"{(predicted.peak - CPU_LIBRARIES_GIB * GIB) / GIB:>8.3f}")
                            continue
                        measured = measure(config, ns.timeout, ns.glibc_default)
                        if measured is None:
                            continue
                        baselines.append(measured["baseline"] / GIB)
                        pred_mem = predicted.peak - CPU_LIBRARIES_GIB * GIB
                        meas_mem = measured["peak"] - measured["baseline"]
                        tps = measured["tokens_per_second"] or 0.0
                        rows.append((model, method, batch, gc, pred_mem, meas_mem, predicted.tokens_per_second, tps))
                        print(f"{model[:10]:<10} {method:<7} {batch:>2} {'on' if gc else 'off':>3} | "
                              f"{pred_mem / GIB:>8.3f} {meas_mem / GIB:>8.3f} {pred_mem / meas_mem - 1:>+6.1%} | "
                              f"{predicted.tokens_per_second:>10.0f} {tps:>10.0f} "
                              f"{predicted.tokens_per_second / tps - 1 if tps else float('nan'):>+6.1%}", flush=True)
                        if ns.verbose:
                            print("    predicted: " + ", ".join(
                                f"{k} {getattr(predicted, k) / GIB:.3f}" for k in
                                ("weights", "gradients", "optimizer", "activations", "logits")), flush=True)
    if rows:
        worst = max(abs(p / m - 1) for *_, p, m, _, _ in rows)
        print(f"\nmemory: worst error {worst:.1%} over {len(rows)} rows. Measured: peak RSS while training minus the "
              f"RSS after imports ({min(baselines):.2f}-{max(baselines):.2f} GiB); predicted: the estimate's peak minus "
              f"its libraries' share CPU_LIBRARIES_GIB ({CPU_LIBRARIES_GIB:.2f} GiB)")
        pairs = wrong = 0
        for model in sorted({r[0] for r in rows}):
            for batch in sorted({r[2] for r in rows}):
                for gc in (False, True):
                    chosen = [r for r in rows if r[0] == model and r[2] == batch and r[3] == gc]
                    if len(chosen) < 2:
                        continue
                    n, bad, ties = _order(chosen)
                    pairs, wrong = pairs + n, wrong + len(bad)
                    by_meas = [r[1] for r in sorted(chosen, key=lambda r: r[5])]
                    print(f"order {model} bs{batch} gc {'on' if gc else 'off'}: measured {' < '.join(by_meas)}; "
                          f"{n - len(bad)}/{n} pairs apart by >{TIE:.0%} ordered right"
                          + (f", WRONG: {', '.join(bad)}" if bad else "") + (f" (ties: {', '.join(ties)})" if ties else ""))
        print(f"ordering: {pairs - wrong} of {pairs} method pairs measured more than {TIE:.0%} apart are predicted "
              "in the same order")


TIE = 0.05
"""Methods whose measured peaks are closer than this are a tie for the ordering check: an estimate held to
15% cannot rank them, and no user choice turns on it."""


def _order(rows: list[tuple[Any, ...]]) -> tuple[int, list[str], list[str]]:
    """Pairs measured more than TIE apart, those the prediction orders the other way, and the ties."""
    compared, bad, ties = 0, [], []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            low, high = sorted((a, b), key=lambda r: r[5])
            if high[5] <= low[5] * (1 + TIE):
                ties.append(f"{low[1]}~{high[1]}")
                continue
            compared += 1
            if low[4] >= high[4]:
                bad.append(f"{low[1]} < {high[1]} measured, the reverse predicted")
    return compared, bad, ties


# -- the paper's Table 4 -----------------------------------------------------------------------------

# Published architectures (config.json of google/gemma-2b and meta-llama/Llama-2-7b-hf / -13b-hf).
GEMMA_2B = {"model_type": "gemma", "vocab_size": 256000, "hidden_size": 2048, "intermediate_size": 16384,
            "num_hidden_layers": 18, "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
            "max_position_embeddings": 8192, "tie_word_embeddings": True, "hidden_act": "gelu"}
LLAMA2_7B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "max_position_embeddings": 4096, "tie_word_embeddings": False}
LLAMA2_13B = {**LLAMA2_7B, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
              "num_attention_heads": 40, "num_key_value_heads": 40}
# Table 4: (trainable params in billions, peak memory GB, tokens/s) per model and method.
PAPER = {
    "Gemma-2B": (GEMMA_2B, {"full": (2.51, 17.06, 3090.42), "freeze": (0.33, 8.10, 5608.49),
                            "galore": (2.51, 10.16, 2483.05), "lora": (0.16, 7.91, 3521.05),
                            "qlora": (0.16, 5.21, 3158.59)}),
    "Llama2-7B": (LLAMA2_7B, {"full": (6.74, 38.72, 1334.72), "freeze": (0.61, 15.69, 2904.98),
                              "galore": (6.74, 15.43, 1583.77), "lora": (0.32, 16.32, 1954.07),
                              "qlora": (0.32, 7.52, 1579.16)}),
    "Llama2-13B": (LLAMA2_13B, {"freeze": (0.95, 29.02, 1841.46), "galore": (13.02, 28.91, 956.39),
                                "lora": (0.50, 30.09, 1468.19), "qlora": (0.50, 12.61, 973.53)}),
}
# The paper's settings: bf16, 8-bit AdamW, activation checkpointing, a token batch of 512, flash
# attention; freeze: the last 3 layers; GaLore rank 128, scale 2; LoRA/QLoRA rank 128, alpha 256, all
# linear layers. Read from its numbers: full, freeze and GaLore ran in pure bf16 (Gemma-2B's 17.06 GB
# has no room for fp32 copies of 2.51B weights) and GaLore layer-wise (Llama2-7B's 15.43 GB holds no
# full gradient); LoRA and QLoRA in bf16 mixed precision, adapters in fp32 (LlamaFactory's default).
# LF's GaLore keeps 32-bit state (the paper's LlamaFactory used GaLore's 8-bit AdamW).
_LORA = {"finetuning_type": "lora", "lora_rank": 128, "lora_alpha": 256, "lora_target": ["all"]}
PAPER_METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {"finetuning": {"finetuning_type": "full"}, "train": {}, "model": {"pure_bf16": True}},
    "freeze": {"finetuning": {"finetuning_type": "freeze", "freeze_trainable_layers": 3}, "train": {},
               "model": {"pure_bf16": True}},
    "galore": {"finetuning": {"finetuning_type": "full"}, "model": {"pure_bf16": True},
               "train": {"use_galore": True, "galore_rank": 128, "galore_scale": 2.0, "galore_layerwise": True}},
    "lora": {"finetuning": _LORA, "train": {}, "model": {}},
    "qlora": {"finetuning": _LORA, "train": {}, "model": {"quantization_bit": 4}},
}


def paper_plan(name: str, method: str, fused_lm_head: bool = False) -> Any:
    from lf_data.args import DataArguments
    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_train.args import TrainArguments
    from lf_train.plan import TrainPlan

    spec = PAPER_METHODS[method]
    model = ModelArguments(model_name_or_path=name, flash_attn="fa2", **spec["model"])
    hf = {"output_dir": "unused", "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
          "gradient_checkpointing": True, "bf16": True, "optim": "adamw_bnb_8bit", "max_steps": 1000}
    return TrainPlan(DataArguments(dataset=["pubmed"], cutoff_len=512), model, FinetuningArguments(**spec["finetuning"]),
                     TrainArguments(stage="pt", fused_lm_head=fused_lm_head, **spec["train"]), hf)


def run_paper() -> None:
    from transformers import AutoConfig

    from lf_train.estimate import DEVICES, GIB, estimate_plan

    device = DEVICES["A100 40GB"]
    print(f"\nPaper Table 4 (LlamaFactory, one {device.name}; memory in GB as the paper prints it, read as GiB):")
    header = (f"{'model':<10} {'method':<7} | {'params B':>8} {'paper':>6} | {'pred GB':>7} {'paper':>6} {'err':>6} | "
              f"{'pred tok/s':>10} {'paper':>7} {'err':>6} | {'LF GB':>6}")
    print(header)
    print("-" * len(header))
    errors = []
    for name, (arch, rows) in PAPER.items():
        config = AutoConfig.for_model(**arch)
        for method, (params_b, memory, throughput) in rows.items():
            result = estimate_plan(paper_plan(name, method), device, 1, model_config=config)
            lf = estimate_plan(paper_plan(name, method, fused_lm_head=True), device, 1, model_config=config)
            predicted = result.peak / GIB
            errors.append((name, method, predicted / memory - 1))
            print(f"{name:<10} {method:<7} | {result.trainable_params / 1e9:>8.2f} {params_b:>6.2f} | "
                  f"{predicted:>7.2f} {memory:>6.2f} {predicted / memory - 1:>+6.1%} | "
                  f"{result.tokens_per_second:>10.0f} {throughput:>7.0f} {result.tokens_per_second / throughput - 1:>+6.1%} | "
                  f"{lf.peak / GIB:>6.2f}")
    worst = max(errors, key=lambda e: abs(e[2]))
    print(f"memory: worst error {worst[2]:+.1%} ({worst[0]} {worst[1]}); ordering of methods per model: " +
          "; ".join(_paper_order(name, rows, device) for name, (_, rows) in PAPER.items()))


def _paper_order(name: str, rows: dict[str, Any], device: Any) -> str:
    from transformers import AutoConfig

    from lf_train.estimate import estimate_plan

    config = AutoConfig.for_model(**PAPER[name][0])
    predicted = {m: estimate_plan(paper_plan(name, m), device, 1, model_config=config).peak for m in rows}
    n, bad, ties = _order([(name, m, 0, False, predicted[m], rows[m][1]) for m in rows])
    return (f"{name} {n - len(bad)}/{n} pairs apart by >{TIE:.0%} right" + (f", WRONG: {', '.join(bad)}" if bad else "")
            + (f" (ties: {', '.join(ties)})" if ties else ""))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,smollm2-135m-instruct")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--batch-sizes", default="2,4")
    parser.add_argument("--gc", default="off,on")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cutoff-len", type=int, default=256)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--paper-only", action="store_true")
    parser.add_argument("--no-paper", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print each row's predicted breakdown")
    parser.add_argument("--dry-run", action="store_true", help="print the predictions only (no training)")
    parser.add_argument("--glibc-default", action="store_true",
                        help="measure with glibc's default mmap threshold (RSS then includes freed heap blocks)")
    ns = parser.parse_args()
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames, once per row
    if not ns.paper_only:
        run_rows(ns)
    if not ns.no_paper:
        run_paper()


if __name__ == "__main__":
    main()
