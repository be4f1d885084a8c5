"""LF on one GPU: training tokens/s and peak GPU memory by method and kernel choice, and serving throughput.

Run from the repository root on a machine with a CUDA GPU and LF installed (`uv sync`; flash-attn,
liger-kernel, bitsandbytes and vLLM are used where installed and reported as skipped where not):
  python bench/gpu.py [--models smollm2-135m-instruct,qwen2-0.5b-shape] [--work lora,qlora,full,serve]
                      [--steps 20] [--batch 8] [--folder DIR]
  python bench/gpu.py --cpu-smoke     # the same plumbing on a CPU: the tiny Llama, 2 steps, no serving
  python bench/gpu.py --plan-only     # write the configs and list the runs, train nothing

- Models: SmolLM2-135M-Instruct (bundled with LF) and `qwen2-0.5b-shape`, Qwen2.5-0.5B's architecture
  (hidden 896, 24 layers, GQA 14/2, vocabulary 151,936, tied head; 494M parameters) built from its config
  with random bf16 weights and SmolLM2's tokenizer: speed does not depend on the weights' values.
- Training: sft on bench/vs_llamafactory.py's alpaca rows (real text, answers of log-uniform length, cutoff
  1024), `--steps` steps of `--batch` rows in bf16, one `lf train` process per run, as a user starts it.
  Variants per method: LF's defaults (padding-free rows, FA2 where flash-attn is installed, TRL's fused LM
  head, gradient checkpointing), `padding_free: false` (rows padded to the batch's longest),
  `flash_attn: sdpa`, `use_liger_kernel: true`, and `gradient_checkpointing: false`.
- Measures: real (non-padding) tokens/s over the trainer's own train_runtime, the peak GPU memory the run
  allocated and reserved (torch.cuda.max_memory_*; on --cpu-smoke the peak RSS), and the mean loss.
- Serving: the huggingface engine (continuous batching) and, where vLLM is installed, the vllm engine,
  each answering 1 and then 64 concurrent chats of 128 greedy tokens in process; generated tokens/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

MODELS = ("smollm2-135m-instruct", "qwen2-0.5b-shape")
METHODS = {  # name: (method keys, extra package it needs)
    "lora": ({"finetuning_type": "lora", "lora_target": "all", "lora_rank": 16}, None),
    "qlora": ({"finetuning_type": "lora", "lora_target": "all", "lora_rank": 16, "quantization_bit": 4}, "bitsandbytes"),
    "full": ({"finetuning_type": "full"}, None),
}
VARIANTS = {  # name: (config changes, extra package it needs)
    "LF defaults": ({}, None),
    "padding_free: false": ({"padding_free": False}, None),
    "flash_attn: sdpa": ({"flash_attn": "sdpa"}, None),
    "use_liger_kernel": ({"use_liger_kernel": True}, "liger_kernel"),
    "no checkpointing": ({"gradient_checkpointing": False}, None),
}
RUNNER = """
import json, resource, sys
import torch
from lf_data.cli import main
code = main(["train", sys.argv[1]])
peak = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if torch.cuda.is_available():
    peak.update(allocated_gib=torch.cuda.max_memory_allocated() / 2**30, reserved_gib=torch.cuda.max_memory_reserved() / 2**30)
print("PEAK " + json.dumps(peak), flush=True)
sys.exit(code)
"""


def installed(package: str | None) -> bool:
    return package is None or importlib.util.find_spec(package) is not None


def qwen2_shape(folder: Path, tokenizer_path: str) -> str:
    """Qwen2.5-0.5B's architecture with random bf16 weights and SmolLM2's tokenizer (ids < 49,152 of 151,936)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    path = folder / "qwen2-0.5b-shape"
    if (path / "config.json").is_file():
        return str(path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1_000_000.0, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def model_paths(names: list[str], folder: Path, cpu_smoke: bool) -> dict[str, str]:
    from vs_llamafactory import corpus, model_path

    if cpu_smoke:
        return {"tiny": model_path("tiny", folder, corpus())}
    smollm2 = model_path("smollm2-135m-instruct", folder, [])
    return {name: smollm2 if name == "smollm2-135m-instruct" else qwen2_shape(folder, smollm2) for name in names}


def train_config(model: str, method: dict[str, Any], variant: dict[str, Any], data: Path, out: Path,
                 steps: int, batch: int, cpu_smoke: bool) -> dict[str, Any]:
    config = {"model_name_or_path": model, "stage": "sft", "do_train": True, "template": "chatml", **method,
              "dataset": "bench_sft", "dataset_dir": str(data), "cutoff_len": 512 if cpu_smoke else 1024,
              "max_samples": steps * batch, "num_train_epochs": 1, "per_device_train_batch_size": batch,
              "learning_rate": 1e-4, "logging_steps": 1, "save_strategy": "no", "output_dir": str(out),
              "overwrite_output_dir": True, "report_to": "none", "plot_loss": False, "seed": 42, "disable_tqdm": True}
    if not cpu_smoke:
        config["bf16"] = True
    config.update(variant)
    return config


def train_once(config: dict[str, Any], folder: Path) -> dict[str, float]:
    import yaml

    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(path)], capture_output=True, text=True, cwd=REPO)
    peaks = [line for line in proc.stdout.splitlines() if line.startswith("PEAK ")]
    if proc.returncode != 0 or not peaks:
        raise RuntimeError(f"lf train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = Path(config["output_dir"])
    result = json.loads((out / "train_results.json").read_text())
    return {"runtime": result["train_runtime"], "loss": result["train_loss"], **json.loads(peaks[-1][5:])}


def serve_once(model: str, backend: str, concurrency: int, tokens: int) -> float:
    """Generated tokens/s of `concurrency` greedy chats of `tokens` tokens, in process."""
    from lf_serve import load_engine

    engine = load_engine({"model_name_or_path": model, "template": "chatml", "infer_backend": backend,
                          "do_sample": False, "max_new_tokens": tokens, "max_batch_size": max(16, concurrency)})
    try:
        engine.chat([{"role": "user", "content": "Warm up."}], max_new_tokens=4)
        counts = [0] * concurrency

        def ask(i: int) -> None:
            counts[i] = engine.chat([{"role": "user", "content": f"Tell me about topic {i}."}],
                                    max_new_tokens=tokens)[0].completion_tokens

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(concurrency)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - start)
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--work", default="lora,qlora,full,serve")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--folder", type=Path, default=None, help="workspace (default: a temporary folder)")
    parser.add_argument("--cpu-smoke", action="store_true", help="the tiny Llama on a CPU, 2 steps of batch 2")
    parser.add_argument("--plan-only", action="store_true", help="write the configs, list the runs, train nothing")
    args = parser.parse_args()
    import torch
    from vs_llamafactory import corpus, real_tokens, write_data

    if not args.cpu_smoke and not args.plan_only and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU (--cpu-smoke runs its plumbing on a CPU).")
    steps, batch = (2, 2) if args.cpu_smoke else (args.steps, args.batch)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="lf-gpu-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    write_data(data, corpus(), sft_rows=max(1000, steps * batch))
    names = args.models.split(",")
    models = ({n: n for n in names} if args.plan_only and not args.cpu_smoke  # the plan needs no weights
              else model_paths(names, folder, args.cpu_smoke))
    work = args.work.split(",")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    rows: list[tuple] = []
    for name, model in models.items():
        for method_name in (m for m in METHODS if m in work):
            method, needs = METHODS[method_name]
            for variant_name, (variant, variant_needs) in VARIANTS.items():
                missing = [p for p in (needs, variant_needs) if not installed(p)]
                if args.cpu_smoke and (method_name == "qlora" or variant_name == "use_liger_kernel"):
                    missing.append("a GPU")
                config = train_config(model, method, variant, data, folder / "out", steps, batch, args.cpu_smoke)
                if missing or args.plan_only:
                    rows.append((name, method_name, variant_name, "skipped: " + ", ".join(missing) if missing else
                                 "planned", "", "", ""))
                    if args.plan_only:
                        (folder / f"{name}-{method_name}-{variant_name.split(':')[0].replace(' ', '_')}.yaml").write_text(
                            json.dumps(config))
                    continue
                result = train_once(config, folder)
                tokens = real_tokens(config)
                memory = (f"{result['allocated_gib']:.2f} / {result['reserved_gib']:.2f} GiB" if "allocated_gib" in result
                          else f"RSS {result['rss_mib']:.0f} MiB")
                rows.append((name, method_name, variant_name, f"{tokens / result['runtime']:,.0f}", memory,
                             f"{result['loss']:.4f}", f"{result['runtime']:.1f}"))
                print(" | ".join(map(str, rows[-1])), flush=True)
        if "serve" in work and not args.cpu_smoke and not args.plan_only:
            for backend in ("huggingface", "vllm"):
                if backend == "vllm" and not installed("vllm"):
                    rows.append((name, "serve", backend, "skipped: vllm", "", "", ""))
                    continue
                single = serve_once(model, backend, 1, 128)
                many = serve_once(model, backend, 64, 128)
                rows.append((name, "serve", backend, f"1 chat {single:,.0f} / 64 chats {many:,.0f} gen tok/s", "", "", ""))
    print(f"\n{device}, {steps} steps of {batch} rows" + ("" if args.cpu_smoke else ", bf16"))
    header = ("model", "method", "variant", "real tokens/s", "peak memory (allocated / reserved)", "mean loss", "s")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
