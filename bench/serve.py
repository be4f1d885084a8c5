"""`lf api` latency and throughput: time to first token, total latency, generated tokens/s.

Run: uv run python bench/serve.py [--models tiny,smollm2-135m-instruct] [--tokens 64]
For each model, starts `lf api` as a user does (a subprocess on a free port, greedy decoding, a
fixed number of new tokens), then streams chat completions through HTTP: one request alone
(TTFT and total latency), and 1, 4 and 16 concurrent requests (generated tokens/s over the wall
time of the whole wave, tokens counted from the server's usage report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Write a short story about a fox who learns to fly."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, tokens: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    config = workdir / "serve.yaml"
    # ignore_eos-like behaviour: stop only at the token budget, so every request generates `tokens`
    config.write_text(yaml.safe_dump({"model_name_or_path": model, "template": "chatml", "temperature": 0,
                                      "max_new_tokens": tokens, "served_model_name": "bench"}))
    port = free_port()
    env = {**os.environ, "API_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "lf_data.cli", "api", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(proc, url + "/health", "lf api")
    return proc, url


def wait_until_up(proc: subprocess.Popen, probe: str, name: str, log: Path | None = None) -> None:
    """Return once `probe` answers 200; a server that exits or takes 10 minutes is an error."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:] if log else ''}")
        try:
            if httpx.get(probe, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{name} did not start in 10 minutes")


async def one_request(client: httpx.AsyncClient, url: str, tokens: int) -> tuple[float, float, int]:
    """(time to first token, total time, generated tokens) of one streamed chat completion."""
    body = {"model": "bench", "messages": [{"role": "user", "content": QUESTION}], "stream": True,
            "max_tokens": tokens, "stream_options": {"include_usage": True}}
    start, first, generated = time.perf_counter(), None, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                generated = chunk["usage"]["completion_tokens"]
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return first or float("nan"), time.perf_counter() - start, generated


async def wave(url: str, concurrency: int, tokens: int) -> tuple[float, float, float]:
    """(median TTFT, median latency, generated tokens/s) of `concurrency` simultaneous requests."""
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*[one_request(client, url, tokens) for _ in range(concurrency)])
        wall = time.perf_counter() - start
    return (statistics.median(r[0] for r in results), statistics.median(r[1] for r in results),
            sum(r[2] for r in results) / wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,4,16")
    ns = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in ns.models.split(","):
            ref = model
            if model == "tiny":
                sys.path.insert(0, str(REPO / "tests"))
                from conftest import build_tiny_model, build_tokenizer

                ref = str(build_tiny_model(Path(tmp) / "tiny", "llama", build_tokenizer(Path(tmp) / "tok")))
            proc, url = start_server(ref, ns.tokens, Path(tmp))
            try:
                asyncio.run(wave(url, 1, ns.tokens))  # warm-up
                for concurrency in (int(c) for c in ns.concurrency.split(",")):
                    ttft, latency, tps = asyncio.run(wave(url, concurrency, ns.tokens))
                    rows.append((model, concurrency, ttft, latency, tps))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"{ns.tokens} new tokens per request, greedy, streamed over HTTP from `lf api` (huggingface engine)")
    print(f"{'model':<24} {'concurrent':>10} {'TTFT ms':>9} {'latency s':>10} {'gen tok/s':>10}")
    for model, concurrency, ttft, latency, tps in rows:
        print(f"{model:<24} {concurrency:>10} {ttft * 1000:>9.0f} {latency:>10.2f} {tps:>10.1f}")


if __name__ == "__main__":
    main()
