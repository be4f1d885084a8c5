"""The transformers engine's CPU choices, each against LF's default, on the same model and requests.

Run: uv run python bench/serve_engine.py [--reps 3] [--model smollm2-135m-instruct] [--no-adapter]

Variants (each in a fresh process, alternately, `--reps` times):
- LF: the defaults.
- `cpu_packed_linear: false`: torch's MKL product for every linear layer instead of oneDNN on
  weights packed at load (`lf_serve.engines.cpu_linear`).
- loaded in the main thread: the engine as it was before its worker thread loaded the model. When
  the main thread has run parallel torch operations (loading, merging a LoRA adapter, packing), torch's
  OpenMP runtime holds a team of threads for it and another for the worker that decodes; with more
  threads than cores an idle team thread sleeps after about a hundred spins, and every small parallel
  operation of a decoding step waits for one to wake.

Each serves through `HuggingfaceEngine.batch_chat`, greedy, every answer `--tokens` long: one
request alone, then 16 at once. The model is SmolLM2-135M-Instruct with a rank-8 LoRA adapter on
every linear layer (random, built here), merged at load as `lf api` merges a user's adapter;
`--no-adapter` serves the bare model. The answers of every run are compared
(a note is printed where they differ).

Measured 2026-12-06 on 2 AMD EPYC cores (lf-serve's README quotes the table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VARIANTS = {"LF": {}, "cpu_packed_linear: false": {"cpu_packed_linear": False}, "loaded in the main thread": {}}


def build_adapter(base: str, folder: Path) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=8, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained adapter's B is not zero
            torch.nn.init.normal_(param, std=1e-3)
    model.save_pretrained(folder)
    return str(folder)


def measure(variant: str, model: str, adapter: str | None, tokens: int) -> dict[str, float]:
    """In this process: build the engine the variant's way, then time one request and 16 at once."""
    from lf_serve.args import parse_serve_config
    from lf_serve.engines.huggingface import HuggingfaceEngine

    class LoadedInMainThread(HuggingfaceEngine):
        """The engine as it was: the caller's thread loads the model, the worker only decodes."""

        def __init__(self, plan) -> None:
            self._ready = threading.Event()
            super().__init__(plan)
            self._load()
            self._ready.set()

        def _own_model(self, loaded) -> None:
            loaded.set_result(None)
            self._ready.wait()
            self._work()

    config = {"model_name_or_path": model, "template": "chatml", "do_sample": False, "max_new_tokens": tokens,
              **VARIANTS[variant]}
    if adapter:
        config.update(adapter_name_or_path=adapter, finetuning_type="lora")
    plan = parse_serve_config(config)
    engine = (LoadedInMainThread if variant == "loaded in the main thread" else HuggingfaceEngine)(plan)
    ask = [{"role": "user", "content": "Tell me about topic {}."}]

    def wave(n: int) -> tuple[float, int, list[str]]:
        start = time.perf_counter()
        answers = engine.batch_chat([[{**ask[0], "content": ask[0]["content"].format(i)}] for i in range(n)],
                                    max_tokens=tokens)
        return time.perf_counter() - start, sum(a.completion_tokens for a in answers), [a.text for a in answers]

    wave(1)  # warm-up
    one, _, _ = wave(1)
    wall, generated, texts = wave(16)
    engine.close()
    return {"one request s": one, "16 at once tok/s": generated / wall, "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--no-adapter", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        variant, model, adapter = json.loads(ns.child)
        print("RESULT", json.dumps(measure(variant, model, adapter, ns.tokens)), flush=True)
        return
    from lf_models.args import ModelArguments
    from lf_models.loader import resolve_model

    model = resolve_model(ModelArguments(model_name_or_path=ns.model)).path
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    answers: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="lf-serve-thread-") as tmp:
        adapter = None if ns.no_adapter else build_adapter(model, Path(tmp) / "adapter")
        for rep in range(ns.reps):
            for variant in list(VARIANTS) if rep % 2 == 0 else list(VARIANTS)[::-1]:
                proc = subprocess.run([sys.executable, __file__, "--tokens", str(ns.tokens), "--child",
                                       json.dumps([variant, model, adapter])], capture_output=True, text=True)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    raise SystemExit(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
                runs[variant].append(json.loads(line[0][7:]))
                texts = runs[variant][-1].pop("texts")
                if texts != answers.setdefault("texts", texts):  # a near-tie may flip under another product order
                    print(f"NOTE: {variant} answered differently from the first run", flush=True)
                print(f"rep {rep} {variant}: {runs[variant][-1]}", flush=True)
    print(f"\n{ns.model}{'' if ns.no_adapter else ' + LoRA adapter (merged at load)'}, "
          f"{ns.tokens} tokens per answer, medians of {ns.reps}")
    print(f"{'variant':<26} {'one request s':>14} {'16 at once tok/s':>17}")
    for variant, results in runs.items():
        print(f"{variant:<26} {statistics.median(r['one request s'] for r in results):>14.2f} "
              f"{statistics.median(r['16 at once tok/s'] for r in results):>17.1f}")


if __name__ == "__main__":
    main()
