"""Run the vLLM engine for real on a GPU host (CI tests it against a fake `vllm` module only).

Run: pip install 'lf-serve[vllm]' && python bench/vllm_smoke.py [--model smollm2-135m-instruct] [--adapter DIR]
Loads the model through `infer_backend: vllm`, checks a greedy answer (and a LoRA adapter when
given), streams one answer, serves 16 concurrent requests, and prints the timings. Exits non-zero
when an answer is wrong.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--template", default="smollm2")
    parser.add_argument("--adapter", default=None, help="a LoRA adapter folder served through vLLM's LoRA support")
    parser.add_argument("--gpu-util", type=float, default=0.5)
    parser.add_argument("--tp", type=int, default=1, help="tensor parallel size")
    ns = parser.parse_args()
    from lf_serve import load_engine

    config = {"model_name_or_path": ns.model, "template": ns.template, "infer_backend": "vllm",
              "vllm_gpu_util": ns.gpu_util, "vllm_maxlen": 2048, "vllm_tensor_parallel_size": ns.tp,
              "temperature": 0, "max_new_tokens": 64}
    if ns.adapter:
        config["adapter_name_or_path"] = ns.adapter
    start = time.perf_counter()
    engine = load_engine(config)
    print(f"engine ready in {time.perf_counter() - start:.1f}s")
    ok = True
    try:
        question = [{"role": "user", "content": "What is the capital of France?"}]
        start = time.perf_counter()
        (answer,) = engine.chat(question)
        print(f"greedy answer ({time.perf_counter() - start:.2f}s, {answer.completion_tokens} tokens, "
              f"{answer.finish_reason}): {answer.text!r}")
        ok &= "Paris" in answer.text
        start, first, pieces = time.perf_counter(), None, []
        for piece in engine.stream_chat(question):
            first = first or time.perf_counter() - start
            pieces.append(piece)
        print(f"streamed: {len(pieces)} pieces, first after {1000 * (first or 0):.0f} ms")
        ok &= "".join(pieces) == answer.text
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: engine.chat(question)[0], range(16)))
        wall = time.perf_counter() - start
        tokens = sum(a.completion_tokens for a in answers)
        print(f"16 concurrent requests: {wall:.2f}s, {tokens / wall:.0f} generated tokens/s")
        ok &= all(a.text == answer.text for a in answers)
    finally:
        engine.close()
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
