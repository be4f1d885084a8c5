"""LF next to LlamaFactory 0.9.5 on the same work, the same YAML and the same data, on this machine.

Run:
  uv run python bench/vs_llamafactory.py --setup              # once: LlamaFactory into --venv
  uv run python bench/vs_llamafactory.py [--models tiny,smollm2-135m-instruct]
        [--work sft_lora,dpo_lora,pt_full,preprocess,serve] [--reps 2] [--venv PATH]
        [--no-checkpointing] [--cpu-bf16]

Both systems get one YAML written here (keys they both read; each at its own defaults for the
rest) and run as a user runs them (`lf train x.yaml`, `llamafactory-cli train x.yaml`), alternately,
`--reps` times each; the table gives medians and LF / LlamaFactory ratios.

- Models: a tiny Llama (hidden 256, 4 layers, a 4,096-token BPE tokenizer trained here on the
  corpus) and SmolLM2-135M-Instruct (bundled with LF as GGUF; both systems read LF's converted
  folder).
- Data: real text from the `aclsum` package (MIT; 250 ACL papers' abstracts, introductions and
  conclusions). SFT rows are alpaca rows whose answers are passages of log-uniform length (about
  20 to 600 tokens, truncated at cutoff 512 as in real instruction data); DPO pairs a passage with
  another as the rejected answer; PT packs the papers' text into 512-token blocks.
- Training: one epoch over the same rows, so both see the same examples; tokens/s counts real
  (non-padding) tokens, found by tokenising the rows with LF's pipeline, over the trainer's own
  `train_runtime`; the loss is the trainer's `train_loss` (mean over the epoch); peak RSS is the
  process tree's (wait4). "FLOP/s on real tokens" is real tokens/s times the FLOPs `lf estimate`
  counts for a token of LF's run (matmuls and causal attention: forward, backward and checkpointing's
  recompute; LlamaFactory checkpoints too, and its padding counts for nothing), as a share of this
  machine's fp32 matmul peak (`lf estimate`'s probe); the variants' rows use their own FLOPs a token.
- Preprocessing: cold SFT tokenisation of 10,000 rows in each system's own dataset code, in
  process (after a 16-row warm-up on another file, so lazy imports are not timed; nothing of the
  10,000 rows is cached), next to the raw batched tokenizer on the same text. Every system runs at
  its own `TOKENIZERS_PARALLELISM` default (the variable is not set here).
- Serving: each system's OpenAI-style API (transformers engine, greedy), one request alone, then
  16 concurrent requests of 32 new tokens (one wave to warm up, then the median of 3 waves: single
  waves on these machines swing by 20% or more, and the first pays for new shapes), then 32 requests arriving 15 ms apart asking for 8 to 64
  tokens (where continuous batching differs from waves); generated tokens counted from each
  response's usage.
- `--no-checkpointing` and `--cpu-bf16` add LF runs with `gradient_checkpointing: false` (both systems
  checkpoint by default) and with `bf16: true` (a CPU with AVX512-BF16 or AMX).

What the profiler and probes found (2026-12-06, 2 cores; the README has the table):
- Padding was most of the work: 58% of a random batch of these rows. LF's padding-free batches (sft,
  pt, dpo) removed it. transformers' own SDPA reading of such rows is not exact while a cache exists.
- Startup: 8 of 16 s of `lf train` was Python compiling torch/transformers/peft from source. uv
  writes no bytecode and these machines set PYTHONDONTWRITEBYTECODE=1; `uv sync --compile-bytecode`
  fixes it (17.9 -> 6.7 s on the tiny model). LlamaFactory's pip-built environment has its bytecode.
- Preprocessing: Python's garbage collector ran its passes over the millions of id lists (17% of a
  cold build); lf-data pauses it while it builds. `lf` had turned the Rust tokenizer's threads off for
  the whole process (against the fork warning), so a cold build ran on one core: 3.9 s for 10,000 rows,
  2.6 s with them on while the dataset is tokenised (`lf_data.tokenizer_threads`). Of LF's 2.4-2.5 s
  (in-process phase timings; the bench's medians were 2.6-2.9 s), the Rust encode is 1.4-1.5 s, JSON to Arrow 0.2 s, rendering the template and the
  labels 0.3 s, and alignment and the Arrow writes the rest; the raw batched tokenizer (its Python lists
  included) takes 1.7-2.0 s on the same text. LlamaFactory encodes message by message, which no thread
  speeds up (5.9-6.0 s with the threads on or off, in process; 6.4-6.9 s in the bench).
- PT full is bound by the cores' matmul rate. `lf estimate` counts 36.8 MFLOP for a tiny-model token
  (checkpointed); LF's 2,923 tokens/s are 61% of the 177 GFLOP/s fp32 peak of these 2 AVX2 cores, and
  LlamaFactory's 2,692 are 56% (2026-12-06); on SmolLM2 (1.13 GFLOP a token) 63% against 61%.
  1.5x LlamaFactory would need 84% (tiny) or 91% (SmolLM2), with everything that is
  not a large matmul inside it: in a step (torch profiler) the layers' products run at about 150 GFLOP/s
  (51% of the step's time), torch's CPU flash attention at roughly half that rate (25%), the head's
  2,048 x 256 x 4,096 products at 111 GFLOP/s, the rest elementwise. Without checkpointing a token needs
  27.4 MFLOP, 1.5x would need 62% (SmolLM2: 68%), and LF ran at 47% (56%; 1.13-1.25x LlamaFactory,
  at 1.24x its memory on SmolLM2). The blocks are identical in both systems
  (all 627 compared) and so are the losses: transformers 5.6, LlamaFactory's, divides the summed loss by
  the labels before the shift (512 a block, 511 predicted), so its pt loss reads 511/512 of LF's (8.015 x
  512/511 = 8.031, LF's). Where the tokenizer's pad token is its eos (SmolLM2), LlamaFactory's pt collator
  also drops every document end from the loss; LF trains on them. bf16 autocast on a CPU with AVX512-BF16
  or AMX (`--cpu-bf16`) is the lever left there.
- Memory: without gradient checkpointing a tiny-model step holds about 150 KB of fp32 activations
  per token (logits about 48 KB of it); SmolLM2 about 1.3 MB per token in its 30 layers plus 0.6 MB of
  logits. The logits went first: torch's linear_cross_entropy in chunks of 512 rows (sft/pt's default on
  a CPU, also faster than the logits: bench/fused_head.py). The activations then needed checkpointing,
  now LF's default as LlamaFactory's (its cost: 1.2-1.5x fewer tokens/s, the rows without it). Tried and
  left: glibc's fixed mmap threshold of 128 KiB (10% off sft's peak, twice the step time);
  MALLOC_ARENA_MAX=1 or 2 (no change); torch's selective checkpointing, saving matmul outputs and
  recomputing the rest (SmolLM2 LoRA step 1.21x the time and no lower peak: its dispatch mode costs on
  every op). TRL's head for dpo/kto on a CPU keeps about nine tiles, 2,048 entries wide since this run.
- dpo: each pair's prompt is computed once (the rejected answer a branch of the chosen row in `lf_sdpa`);
  the bench's prompts are short (7% of the pairs' tokens), so it gains 1.06x here and 1.34x on prompts of
  100-300 words (bench/dpo_shared_prompts.py).
- Serving (2026-12-06, 2 AMD EPYC cores): a 16-row SmolLM2 decoding step was about 2.5x a one-row step, 70%
  in matmuls; the tiny Llama's step about 2x, 45% in matmuls of 16 x 256 rows at a third of the cores'
  peak. torch's MKL product keeps such few-row products on one core. oneDNN on weights packed at load
  uses both (SmolLM2's head 22-37 -> 11 ms for 16 rows), but a first try in the API server was slower
  (82 -> 48-67 tokens/s): the server loaded and packed the model in its main thread and decoded in a
  worker, so torch's OpenMP runtime held two thread teams on two cores, and with more threads than cores
  an idle team thread sleeps after about a hundred spins; every small parallel operation of a step then
  waited for one to wake. Since the engine's worker loads the model too, packing is on
  (`cpu_packed_linear`; bench/serve_engine.py: SmolLM2 16 answers 94 -> 123 tokens/s). Also tried and
  left out: a KV cache growing into spare room instead of torch.cat (no change beyond noise in
  interleaved runs); one intra-op thread for the engine (the event loop's core free, but 16 chats 1.5-2x
  slower).
- Peak RSS is mostly imports: torch 2.15 (LF) holds 587 MiB after `import torch` against 501 MiB for the
  torch 2.13 of LlamaFactory's environment (both CUDA wheels, whose CUDA libraries take about 170 MiB on a
  machine without a GPU), so LF's training itself uses about 100 MiB less than LlamaFactory's where the
  peaks are equal. accelerate imported deepspeed in every run where it is installed (25 MiB, 0.3 s); LF's
  Trainers no longer let it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
DEFAULT_VENV = Path.home() / ".cache" / "lf-bench" / "llamafactory-0.9.5"
PINS = ["torch==2.13.0,!=2.13.0+cpu", "torchvision==0.28.0", "torchaudio==2.11.0", "llamafactory==0.9.5"]
QUIET = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_DISABLED": "true",
         "DISABLE_VERSION_CHECK": "1", "LLAMAFACTORY_VERBOSITY": "WARN", "PYTHONWARNINGS": "ignore"}
WORKLOADS = {  # name: (stage, method keys, steps on the tiny model, batch size)
    "sft_lora": ("sft", {"finetuning_type": "lora", "lora_target": "all", "lora_rank": 8}, 50, 4),
    "dpo_lora": ("dpo", {"finetuning_type": "lora", "lora_target": "all", "lora_rank": 8, "pref_beta": 0.1}, 20, 2),
    "pt_full": ("pt", {"finetuning_type": "full"}, 30, 4),
}
CUTOFF = 512  # tokens a row (a pt block)
SMOLLM2_STEPS = {"sft_lora": 12, "dpo_lora": 8, "pt_full": 8}  # ~10x the tiny model's cost per token


# -- setup ----------------------------------------------------------------------------------------

def setup(venv: Path) -> None:
    """LlamaFactory 0.9.5 in its own virtual environment (the pins of DESIGN.md: it needs
    transformers <= 5.6 and imports torchaudio unconditionally)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PINS], check=True)
    print(f"LlamaFactory installed in {venv}")


# -- the shared workspace -------------------------------------------------------------------------

def corpus() -> list[str]:
    from summarize import aclsum_dir, detokenize

    texts = []
    for split in ("train", "val", "test"):
        for line in (aclsum_dir() / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                paper = json.loads(line)
                texts.append(detokenize(" ".join(s for part in paper["sentences"].values() for s in part)))
    return texts


def passage(words: list[str], rng: random.Random, lo: int, hi: int) -> str:
    length = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    start = rng.randrange(max(1, len(words) - length))
    return " ".join(words[start:start + length])


def write_data(folder: Path, texts: list[str], sft_rows: int = 10_000) -> None:
    rng = random.Random(0)
    words = [t.split() for t in texts]
    questions = ["Summarise this part of the paper.", "Continue the text.", "What does the paper say next?",
                 "Explain the method described here.", "Write the following paragraph."]
    sft = []
    for _ in range(sft_rows):
        paper = rng.choice(words)
        sft.append({"instruction": rng.choice(questions), "input": passage(paper, rng, 5, 40) if rng.random() < 0.4 else "",
                    "output": passage(paper, rng, 12, 450)})
    dpo = [{"instruction": row["instruction"], "input": row["input"], "chosen": row["output"],
            "rejected": sft[(i + 7) % len(sft)]["output"]} for i, row in enumerate(sft[:1000])]
    pt = [{"text": text} for text in texts]
    for name, rows in (("bench_sft", sft), ("bench_dpo", dpo), ("bench_pt", pt), ("bench_warm", sft[:16])):
        (folder / f"{name}.json").write_text(json.dumps(rows))
    info = {"bench_sft": {"file_name": "bench_sft.json"}, "bench_warm": {"file_name": "bench_warm.json"},
            "bench_dpo": {"file_name": "bench_dpo.json", "ranking": True,
                          "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
            "bench_pt": {"file_name": "bench_pt.json", "columns": {"prompt": "text"}}}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=1))


def tiny_model(folder: Path, texts: list[str]) -> str:
    """A Llama of hidden 256 and 4 layers with a 4,096-token byte-level BPE trained on the corpus."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(0)
    path = folder / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def model_path(name: str, folder: Path, texts: list[str]) -> str:
    if name == "tiny":
        return tiny_model(folder, texts)
    from lf_models.args import ModelArguments
    from lf_models.loader import resolve_model

    return resolve_model(ModelArguments(model_name_or_path=name)).path  # LF's converted HF folder


def train_config(work: str, model: str, data: Path, out: Path, small: bool) -> dict[str, Any]:
    """Stages with rows of their own train one epoch over `steps x batch` rows; pt stops after `steps`
    packed batches (the corpus is longer)."""
    stage, method, steps, batch = WORKLOADS[work]
    steps = steps if small else SMOLLM2_STEPS[work]
    config = {"model_name_or_path": model, "stage": stage, "do_train": True, "template": "chatml", **method,
              "dataset": f"bench_{stage}", "dataset_dir": str(data), "cutoff_len": CUTOFF,
              "output_dir": str(out), "overwrite_output_dir": True, "per_device_train_batch_size": batch,
              "num_train_epochs": 1, "learning_rate": 1e-4, "logging_steps": 5, "save_steps": 100_000,
              "report_to": "none", "plot_loss": False, "seed": 42, "disable_tqdm": True}
    config.update({"max_steps": steps} if stage == "pt" else {"max_samples": steps * batch})
    return config


def real_tokens(config: dict[str, Any]) -> int:
    """Non-padding tokens of one epoch, by LF's pipeline (both systems tokenise the rows the same way:
    bench/template_parity.py); a pt run with max_steps counts the packed blocks it trains on."""
    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.args import ModelArguments
    from lf_models.loader import load_tokenizer

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=config["model_name_or_path"]))
    args = DataArguments(dataset=[config["dataset"]], dataset_dir=config["dataset_dir"], template="chatml",
                         cutoff_len=config["cutoff_len"], max_samples=config.get("max_samples"))
    rows = build_dataset(args, tokenizer, config["stage"]).train_dataset
    keys = [k for k in rows.column_names if k.endswith("input_ids")]
    total = sum(len(ids) for key in keys for ids in rows[key])
    if "max_steps" in config:
        total = min(total, config["max_steps"] * config["per_device_train_batch_size"] * config["cutoff_len"])
    return total


def flops_per_token(config: dict[str, Any], system: str) -> tuple[float, float]:
    """(FLOPs a real token needs in this run, this machine's fp32 matmul peak in TFLOP/s), from `lf estimate`:
    the matmuls and causal attention of the forward, backward and checkpointing's recompute; padding and
    everything that is not a matmul count for nothing. LlamaFactory checkpoints too, so LF's figure is its
    figure."""
    from lf_train.estimate import estimate

    keys = {"gradient_checkpointing": system != "LF no checkpointing"}
    result = estimate({**config, **keys, **({"bf16": True} if system == "LF bf16" else {})})
    return result.flops_per_token, result.device.peak_tflops


# -- running one system -----------------------------------------------------------------------------

def measured(command: list[str], env: dict[str, str], log: Path, timeout: int = 3600) -> tuple[int, float, float]:
    """(exit code, peak RSS of the process tree in MiB, wall seconds) of one command."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, env={**os.environ, **QUIET, **env}, stdout=out, stderr=subprocess.STDOUT)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, time.perf_counter() - start


def commands(venv: Path) -> dict[str, list[str]]:
    lf = [sys.executable, "-m", "lf_data.cli"]
    return {"LF": lf, "LF no checkpointing": lf, "LF bf16": lf, "LlamaFactory": [str(venv / "bin" / "llamafactory-cli")]}


def train_once(system: str, cli: list[str], config: dict[str, Any], folder: Path) -> dict[str, Any]:
    import yaml

    if system == "LF no checkpointing":  # activations kept: speed for memory
        config = {**config, "gradient_checkpointing": False}
    if system == "LF bf16":  # bf16 autocast on a CPU with AVX512-BF16/AMX (opt-in)
        config = {**config, "bf16": True}
    out = Path(config["output_dir"])
    path = folder / f"{system.replace(' ', '_')}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = folder / f"{system.replace(' ', '_')}.log"
    code, rss, wall = measured([*cli, "train", str(path)], {}, log)
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{system} train failed ({code}):\n{tail}")
    result = json.loads((out / "train_results.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    return {"runtime": result["train_runtime"], "loss": result["train_loss"], "rss": rss, "wall": wall,
            "steps": state["global_step"]}


# -- preprocessing ----------------------------------------------------------------------------------

LF_PREPROCESS = """
import json, os, sys, time
from lf_data.args import DataArguments
from lf_data.pipeline import build_dataset
from lf_models.args import ModelArguments
from lf_models.loader import load_tokenizer
model, data = sys.argv[1], sys.argv[2]
tokenizer = load_tokenizer(ModelArguments(model_name_or_path=model))
def build(name):
    return build_dataset(DataArguments(dataset=[name], dataset_dir=data, template="chatml", cutoff_len=2048), tokenizer, "sft").train_dataset
build("bench_warm")  # the pipeline's own imports, outside the timing
start = time.perf_counter()
rows = build("bench_sft")
print("RESULT", json.dumps({"seconds": time.perf_counter() - start, "tokens": sum(map(len, rows["input_ids"]))}))
"""
LLAMAFACTORY_PREPROCESS = """
import json, os, sys, time
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
model, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
def build(name):
    args = get_train_args({"model_name_or_path": model, "stage": "sft", "do_train": True, "template": "chatml",
                           "dataset": name, "dataset_dir": data, "cutoff_len": 2048, "output_dir": out,
                           "finetuning_type": "lora", "report_to": "none", "overwrite_cache": True})
    model_args, data_args, training_args = args[0], args[1], args[2]
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    return lambda: get_dataset(template, model_args, data_args, training_args, stage="sft", **module)["train_dataset"]
build("bench_warm")()  # the pipeline's own imports, outside the timing
run = build("bench_sft")
start = time.perf_counter()
rows = run()
print("RESULT", json.dumps({"seconds": time.perf_counter() - start, "tokens": sum(map(len, rows["input_ids"]))}))
"""
RAW = """
import json, sys, time
from transformers import AutoTokenizer
rows = json.load(open(sys.argv[2]))
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
texts = [r["instruction"] + "\\n" + r["input"] + r["output"] for r in rows]
start = time.perf_counter()
ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
print("RESULT", json.dumps({"seconds": time.perf_counter() - start, "tokens": sum(map(len, ids))}))
"""


def preprocess_once(system: str, python: str, model: str, data: Path, folder: Path) -> dict[str, float]:
    script = {"LF": LF_PREPROCESS, "LlamaFactory": LLAMAFACTORY_PREPROCESS, "raw tokenizer": RAW}[system]
    cache = Path(tempfile.mkdtemp(dir=folder))  # cold: a fresh cache for each run
    env = {"LF_CACHE_HOME": str(cache / "lf"), "HF_DATASETS_CACHE": str(cache / "hf"), "HF_HOME": str(cache / "hf")}
    target = str(data / "bench_sft.json") if system == "raw tokenizer" else str(data)
    log = folder / "preprocess.log"
    code, rss, wall = measured([python, "-c", script, model, target, str(cache / "out")], env, log)
    text = log.read_text(errors="replace")
    match = re.search(r"^RESULT (.*)$", text, re.M)
    if code != 0 or not match:
        raise RuntimeError(f"{system} preprocessing failed ({code}):\n{text[-3000:]}")
    return json.loads(match.group(1))


# -- serving --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(cli: list[str], model: str, folder: Path, tokens: int) -> tuple[subprocess.Popen, str]:
    import yaml
    from serve import wait_until_up

    config = folder / "api.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": model, "template": "chatml", "do_sample": False,
                                      "max_new_tokens": tokens}))
    port = free_port()
    log = (folder / "api.log").open("w")
    proc = subprocess.Popen([*cli, "api", str(config)], env={**os.environ, **QUIET, "API_PORT": str(port)},
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(proc, url + "/v1/models", f"{Path(cli[-1]).name} api", folder / "api.log")
    return proc, url


async def chat(client: Any, url: str, tokens: int, question: str) -> tuple[float, int]:
    model = (await client.get(url + "/v1/models")).json()["data"][0]["id"]
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": tokens}
    start = time.perf_counter()
    response = await client.post(url + "/v1/chat/completions", json=body)
    response.raise_for_status()
    return time.perf_counter() - start, response.json()["usage"]["completion_tokens"]


async def serve_wave(url: str, concurrency: int, tokens: int, stagger_ms: float = 0.0,
                     lengths: tuple[int, ...] = ()) -> tuple[float, float, int]:
    """(median latency, generated tokens/s over the wave's wall time, generated tokens). Request i
    starts after i x stagger_ms and asks for lengths[i % len(lengths)] tokens (default: tokens)."""
    import httpx

    async def one(client: Any, i: int) -> tuple[float, int]:
        await asyncio.sleep(i * stagger_ms / 1000)
        return await chat(client, url, lengths[i % len(lengths)] if lengths else tokens, f"Tell me about topic {i}.")

    async with httpx.AsyncClient(timeout=900) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*[one(client, i) for i in range(concurrency)])
        wall = time.perf_counter() - start
    generated = sum(r[1] for r in results)
    return statistics.median(r[0] for r in results), generated / wall, generated


def serve_once(system: str, cli: list[str], model: str, folder: Path, tokens: int = 32) -> dict[str, float]:
    """One request alone (median of 3), 16 at once (median of 3 waves, after one that warms up the
    16-row shapes), and 32 arriving 15 ms apart with answers of 8 to 64 tokens (where continuous
    batching differs from batching in waves)."""
    proc, url = start_api(cli, model, folder, 64)
    try:
        asyncio.run(serve_wave(url, 1, tokens))  # warm-up
        singles = [asyncio.run(serve_wave(url, 1, tokens)) for _ in range(3)]
        asyncio.run(serve_wave(url, 16, tokens))  # warm-up
        throughput = statistics.median(asyncio.run(serve_wave(url, 16, tokens))[1] for _ in range(3))
        staggered, staggered_tps, _ = asyncio.run(serve_wave(url, 32, tokens, 15, (8, 16, 32, 64)))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"latency": statistics.median(r[0] for r in singles), "single_tokens": singles[0][2], "tps": throughput,
            "staggered_latency": staggered, "staggered_tps": staggered_tps}


# -- the table --------------------------------------------------------------------------------------

def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="install LlamaFactory 0.9.5 into --venv and stop")
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("LF_BENCH_LLAMAFACTORY", DEFAULT_VENV)))
    parser.add_argument("--models", default="tiny,smollm2-135m-instruct")
    parser.add_argument("--work", default="sft_lora,dpo_lora,pt_full,preprocess,serve")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every number here")
    parser.add_argument("--no-checkpointing", action="store_true",
                        help="also train LF with gradient_checkpointing: false (both systems checkpoint by default)")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="also train LF with bf16: true (a CPU with AVX512-BF16 or AMX)")
    ns = parser.parse_args()
    if ns.setup:
        setup(ns.venv)
        return
    if not (ns.venv / "bin" / "llamafactory-cli").exists():
        sys.exit(f"LlamaFactory is not installed in {ns.venv}: run with --setup first (or give --venv)")
    os.environ.update(QUIET)
    import datasets

    datasets.disable_progress_bars()
    cli = commands(ns.venv)
    pythons = {"LF": sys.executable, "LlamaFactory": str(ns.venv / "bin" / "python"), "raw tokenizer": sys.executable}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lf-vs-") as tmp:
        root = Path(tmp)
        texts = corpus()
        data = root / "data"
        data.mkdir()
        write_data(data, texts)
        for name in ns.models.split(","):
            model = model_path(name, root, texts)
            for work in ns.work.split(","):
                runs: dict[str, list[dict[str, Any]]] = {}
                systems = (["raw tokenizer", "LF", "LlamaFactory"] if work == "preprocess" else ["LF", "LlamaFactory"]
                           + (["LF no checkpointing"] if ns.no_checkpointing and work != "serve" else [])
                           + (["LF bf16"] if ns.cpu_bf16 and work != "serve" else []))
                for rep in range(ns.reps):
                    for system in systems if rep % 2 == 0 else systems[::-1]:
                        folder = root / "runs" / f"{name}-{work}-{system.replace(' ', '_')}-{rep}"
                        folder.mkdir(parents=True)
                        if work == "preprocess":
                            run = preprocess_once(system, pythons[system], model, data, folder)
                        elif work == "serve":
                            run = serve_once(system, cli[system], model, folder)
                        else:
                            config = train_config(work, model, data, folder / "out", name == "tiny")
                            run = train_once(system, cli[system], config, folder)
                            run["tokens"] = real_tokens(config) if rep == 0 and system == "LF" else None
                            if rep == 0 and system.startswith("LF"):
                                run["flops_per_token"], run["peak_tflops"] = flops_per_token(config, system)
                        runs.setdefault(system, []).append(run)
                        print(f"{name} {work} {system} rep {rep}: {json.dumps(run)}", flush=True)
                results.append({"model": name, "work": work, "runs": runs})
    print_table(results)
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=1))


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    print(f"{'model':<22} {'work':<11} {'measure':<32} {'LlamaFactory':>13} {'LF':>10} {'LF / LlamaFactory':>18}")
    for result in results:
        runs, model, work = result["runs"], result["model"], result["work"]
        rows: list[tuple[str, float | None, float, bool]] = []  # (measure, LlamaFactory, LF, higher is better)
        if work == "preprocess":
            rows.append(("cold preprocessing s", median(runs["LlamaFactory"], "seconds"), median(runs["LF"], "seconds"), False))
            raw = median(runs["raw tokenizer"], "seconds")
            rows.append(("  LF vs raw tokenizer s (1st: raw)", raw, median(runs["LF"], "seconds"), False))
        elif work == "serve":
            for measure, key, higher in (("16 concurrent: gen tok/s", "tps", True),
                                         ("32 staggered: gen tok/s", "staggered_tps", True),
                                         ("32 staggered: median latency s", "staggered_latency", False),
                                         ("1 request: latency s", "latency", False),
                                         ("1 request: tokens", "single_tokens", True)):
                rows.append((measure, median(runs["LlamaFactory"], key), median(runs["LF"], key), higher))
        else:
            tokens = next(r["tokens"] for r in runs["LF"] if r["tokens"])
            rows.append(("real tokens/s", tokens / median(runs["LlamaFactory"], "runtime"),
                         tokens / median(runs["LF"], "runtime"), True))
            rows.append(("peak RSS MiB", median(runs["LlamaFactory"], "rss"), median(runs["LF"], "rss"), False))
            first = next((r for r in runs["LF"] if r.get("flops_per_token")), None)
            if first:  # LlamaFactory checkpoints too: the same FLOPs per real token as LF's run
                share = first["flops_per_token"] / (first["peak_tflops"] * 1e12) * 100  # % of the peak per token/s
                rows.append(("FLOP/s on real tokens, % of peak", tokens / median(runs["LlamaFactory"], "runtime") * share,
                             tokens / median(runs["LF"], "runtime") * share, True))
            for variant in ("LF no checkpointing", "LF bf16"):
                if variant in runs:
                    name, other = variant[3:], runs[variant]
                    rows.append((f"  LF {name}: tokens/s", tokens / median(runs["LlamaFactory"], "runtime"),
                                 tokens / median(other, "runtime"), True))
                    rows.append((f"  LF {name}: RSS MiB", median(runs["LlamaFactory"], "rss"), median(other, "rss"), False))
                    rows.append((f"  LF {name}: loss", median(runs["LlamaFactory"], "loss"), median(other, "loss"), False))
                    own = next((r for r in other if r.get("flops_per_token")), None)
                    if own:  # its own FLOPs per token (no recompute; bf16 still over the fp32 peak): no ratio
                        rows.append((f"  LF {name}: % of peak", None, tokens / median(other, "runtime")
                                     * own["flops_per_token"] / (own["peak_tflops"] * 1e12) * 100, True))
            rows.append(("train loss (epoch mean)", median(runs["LlamaFactory"], "loss"), median(runs["LF"], "loss"), False))
            if work == "pt_full":  # transformers 5.6 (LlamaFactory's) divides by the labels before the shift
                rows.append((f"  per predicted token (x {CUTOFF}/{CUTOFF - 1})",
                             median(runs["LlamaFactory"], "loss") * CUTOFF / (CUTOFF - 1), median(runs["LF"], "loss"), False))
            rows.append(("steps", median(runs["LlamaFactory"], "steps"), median(runs["LF"], "steps"), True))
        for measure, theirs, ours, _ in rows:
            if theirs is None:
                print(f"{model:<22} {work:<11} {measure:<32} {'':>13} {ours:>10,.4g}")
                continue
            ratio = ours / theirs if theirs else float("nan")
            print(f"{model:<22} {work:<11} {measure:<32} {theirs:>13,.4g} {ours:>10,.4g} {ratio:>17.2f}x")


if __name__ == "__main__":
    main()
