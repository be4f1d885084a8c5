"""LF on one GPU: training tokens/s and peak GPU memory by method and kernel choice, and serving throughput.

Run from the repository root on a machine with a CUDA GPU and LF installed (`uv sync`; flash-attn,
liger-kernel, bitsandbytes and vLLM are used where installed and reported as skipped where not):
  python bench/gpu.py [--models smollm2-135m-instruct,qwen2-0.5b-shape] [--work lora,qlora,full,serve]
                      [--variants ...] [--steps 20] [--batch 8] [--folder DIR] [--llamafactory-site DIR]
  python bench/gpu.py --cpu-smoke     # the same plumbing on a CPU: the tiny Llama, 2 steps, no serving
  python bench/gpu.py --plan-only     # write the configs and list the runs, train nothing
On a lent device machine (no registry there), gather the wheels here and carry them:
  uv run python bench/gpu_kit.py      # .gpu_kit/: LF, LlamaFactory 0.9.5, a tokenizer, the rows
  run(carry=[".gpu_kit"], timeout_s=540,
      command="bash bench/gpu_device.sh --models qwen2-0.5b-shape --work lora,full,serve --out $OUT/gpu.json")
  (about 10 runs of 20-40 s each, most of it process start; each run that fails becomes a row saying why)
  QLoRA needs bitsandbytes, whose 43 MiB wheel does not fit beside the rest: carry it in a call of its own.

- Models: SmolLM2-135M-Instruct (bundled with LF; with `--tokenizer`, as on the device, its architecture
  built from its config) and `qwen2-0.5b-shape`, Qwen2.5-0.5B's architecture (hidden 896, 24 layers, GQA
  14/2, vocabulary 151,936, tied head; 494M parameters), both with random bf16 weights where built and
  SmolLM2's tokenizer: speed does not depend on the weights' values.
- LlamaFactory: with `--llamafactory-site DIR` (a folder of LlamaFactory 0.9.5 and its pins, put ahead of
  the image's packages), each method also runs in LlamaFactory at its defaults on the same YAML, and the
  table gives LF's defaults against it (tokens/s and peak allocated memory).
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
VARIANTS = {  # --variants key: (row name, config changes, extra package it needs)
    "defaults": ("LF defaults", {}, None),
    "padded": ("padding_free: false", {"padding_free": False}, None),
    "sdpa": ("flash_attn: sdpa", {"flash_attn": "sdpa"}, "flash_attn"),  # without flash-attn the defaults are sdpa
    "liger": ("use_liger_kernel", {"use_liger_kernel": True}, "liger_kernel"),
    "no-ckpt": ("no checkpointing", {"gradient_checkpointing": False}, None),
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
LLAMAFACTORY_RUNNER = RUNNER.replace("from lf_data.cli import main\ncode = main([\"train\", sys.argv[1]])",
                                     "import yaml\nfrom llamafactory.train.tuner import run_exp\n"
                                     "run_exp(yaml.safe_load(open(sys.argv[1])))\ncode = 0")
assert LLAMAFACTORY_RUNNER != RUNNER


def installed(package: str | None) -> bool:
    return package is None or importlib.util.find_spec(package) is not None


def built(name: str, folder: Path, tokenizer_path: str) -> str:
    """A model of `name`'s architecture with random bf16 weights and SmolLM2's tokenizer (its ids are all
    below either vocabulary)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    path = folder / name
    if (path / "config.json").is_file():
        return str(path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None}
    if name == "qwen2-0.5b-shape":  # Qwen2.5-0.5B
        model_class, config = Qwen2ForCausalLM, Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=True, **ids)
    elif name == "tiny-shape":  # --cpu-smoke with --tokenizer: the plumbing of a device run, on a CPU
        model_class, config = LlamaForCausalLM, LlamaConfig(
            vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, **ids)
    else:  # SmolLM2-135M
        model_class, config = LlamaForCausalLM, LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100_000.0, tie_word_embeddings=True, **ids)
    torch.manual_seed(0)
    model_class(config).to(torch.bfloat16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def model_paths(names: list[str], folder: Path, cpu_smoke: bool, tokenizer: str | None) -> dict[str, str]:
    from vs_llamafactory import corpus, model_path

    if cpu_smoke:
        return {"tiny": built("tiny-shape", folder, tokenizer) if tokenizer else model_path("tiny", folder, corpus())}
    paths = {}
    for name in names:
        if name == "smollm2-135m-instruct" and tokenizer is None:  # the bundled weights
            paths[name] = model_path(name, folder, [])
        else:
            tokenizer = tokenizer or model_path("smollm2-135m-instruct", folder, [])
            paths[name] = built(name, folder, tokenizer)
    return paths


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


def train_once(config: dict[str, Any], folder: Path, llamafactory_site: Path | None = None) -> dict[str, float]:
    """One training process, as a user starts it; with `llamafactory_site`, LlamaFactory's trainer with
    that folder's packages ahead of the image's (and LF's own out of its path)."""
    import os

    import yaml

    path = folder / "run.yaml"
    env = dict(os.environ)
    if llamafactory_site is None:
        runner = RUNNER
    else:
        runner = LLAMAFACTORY_RUNNER  # the base YAML's keys are all LlamaFactory's; its run takes no variant
        env["PYTHONPATH"] = str(llamafactory_site)
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-c", runner, str(path)], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=900)
    peaks = [line for line in proc.stdout.splitlines() if line.startswith("PEAK ")]
    if proc.returncode != 0 or not peaks:
        raise RuntimeError(f"train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
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
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"LF runs per method, of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--folder", type=Path, default=None, help="workspace (default: a temporary folder)")
    parser.add_argument("--data", type=Path, default=None, help="prepared rows (bench/gpu_kit.py's); default: written here")
    parser.add_argument("--tokenizer", default=None, help="SmolLM2's tokenizer folder: build every model from its config")
    parser.add_argument("--llamafactory-site", type=Path, default=None,
                        help="a folder holding LlamaFactory 0.9.5 and its pins: run it beside LF")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows here as JSON")
    parser.add_argument("--cpu-smoke", action="store_true", help="the tiny Llama on a CPU, 2 steps of batch 2")
    parser.add_argument("--plan-only", action="store_true", help="write the configs, list the runs, train nothing")
    args = parser.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        sys.exit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.llamafactory_site and not (args.llamafactory_site / "llamafactory").is_dir():
        sys.exit(f"--llamafactory-site: no llamafactory package in {args.llamafactory_site} (bench/gpu_device.sh "
                 "installs .gpu_kit/llamafactory there)")
    if args.data and not (args.data / "dataset_info.json").is_file():
        sys.exit(f"--data: no dataset_info.json in {args.data} (bench/gpu_kit.py writes .gpu_kit/data)")
    import torch
    from vs_llamafactory import corpus, real_tokens, write_data

    if not args.cpu_smoke and not args.plan_only and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU (--cpu-smoke runs its plumbing on a CPU).")
    steps, batch = (2, 2) if args.cpu_smoke else (args.steps, args.batch)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="lf-gpu-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = folder / "data"
        data.mkdir(exist_ok=True)
        write_data(data, corpus(), sft_rows=max(1000, steps * batch))
    names = args.models.split(",")
    models = ({n: n for n in names} if args.plan_only and not args.cpu_smoke  # the plan needs no weights
              else model_paths(names, folder, args.cpu_smoke, args.tokenizer))
    work = args.work.split(",")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    rows: list[tuple] = []

    def add(*row: Any) -> None:
        rows.append(row)
        print(" | ".join(map(str, row)), flush=True)
        if args.out:
            args.out.write_text(json.dumps({"device": device, "steps": steps, "batch": batch, "rows": rows}, indent=1))

    for name, model in models.items():
        for method_name in (m for m in METHODS if m in work):
            method, needs = METHODS[method_name]
            runs = [(key, *VARIANTS[key]) for key in args.variants.split(",")]
            if args.llamafactory_site:
                runs.append(("llamafactory", "LlamaFactory 0.9.5 defaults", {}, needs))
            measured: dict[str, tuple[float, float]] = {}
            for key, variant_name, variant, variant_needs in runs:
                missing = [p for p in (needs, variant_needs) if not installed(p)]
                if args.cpu_smoke and (method_name == "qlora" or key == "liger"):
                    missing.append("a GPU")
                config = train_config(model, method, variant, data, folder / "out", steps, batch, args.cpu_smoke)
                if missing or args.plan_only:
                    add(name, method_name, variant_name, "skipped: " + ", ".join(missing) if missing else "planned",
                        "", "", "")
                    if args.plan_only:
                        (folder / f"{name}-{method_name}-{key}.yaml").write_text(json.dumps(config))
                    continue
                try:
                    result = train_once(config, folder, args.llamafactory_site if key == "llamafactory" else None)
                except (RuntimeError, subprocess.TimeoutExpired) as err:  # one failed run costs one row
                    (folder / f"{name}-{method_name}-{key}.log").write_text(str(err))
                    add(name, method_name, variant_name, "failed: " + str(err).strip().splitlines()[-1][:200], "", "", "")
                    continue
                tokens_per_s = real_tokens(config) / result["runtime"]
                memory = result.get("allocated_gib", result["rss_mib"] / 1024)
                measured[key] = (tokens_per_s, memory)
                shown = (f"{result['allocated_gib']:.2f} / {result['reserved_gib']:.2f} GiB" if "allocated_gib" in result
                         else f"RSS {result['rss_mib']:.0f} MiB")
                add(name, method_name, variant_name, f"{tokens_per_s:,.0f}", shown, f"{result['loss']:.4f}",
                    f"{result['runtime']:.1f}")
            if "defaults" in measured and "llamafactory" in measured:
                (lf_speed, lf_memory), (their_speed, their_memory) = measured["defaults"], measured["llamafactory"]
                add(name, method_name, "LF / LlamaFactory", f"{lf_speed / their_speed:.2f}x",
                    f"{lf_memory / their_memory:.2f}x", "", "")
        if "serve" in work and not args.cpu_smoke and not args.plan_only:
            for backend in ("huggingface", "vllm"):
                if backend == "vllm" and not installed("vllm"):
                    add(name, "serve", backend, "skipped: vllm", "", "", "")
                    continue
                single = serve_once(model, backend, 1, 128)
                many = serve_once(model, backend, 64, 128)
                add(name, "serve", backend, f"1 chat {single:,.0f} / 64 chats {many:,.0f} gen tok/s", "", "", "")
    print(f"\n{device}, {steps} steps of {batch} rows" + ("" if args.cpu_smoke else ", bf16"))
    header = ("model", "method", "variant", "real tokens/s", "peak memory (allocated / reserved)", "mean loss", "s")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
