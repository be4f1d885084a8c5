"""`pip install lf-serve` is what an inference host installs: `lf api` and `lf chat` work, and the
training and UI stacks (trl, deepspeed, gradio, bitsandbytes) are not there."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from alone_helpers import LF_PACKAGES, assert_from_wheel, installed, lf, only_in

pytestmark = only_in("lf-serve")

FORBIDDEN = {"trl", "deepspeed", "gradio", "bitsandbytes"}


def test_lf_serve_alone_brings_no_training_or_ui_stack():
    import lf_serve

    assert_from_wheel(lf_serve)
    have = installed()
    assert FORBIDDEN.isdisjoint(have), sorted(FORBIDDEN & set(have))
    assert {"torch", "fastapi", "uvicorn"} <= set(have)
    assert [name for name in LF_PACKAGES if name in have] == ["lf-data", "lf-models", "lf-serve"]
    assert lf("version").returncode == 0


def _config(tmp_path: Path, model: Path) -> Path:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(model), "template": "chatml",
                                      "temperature": 0, "max_new_tokens": 4}))
    return config


def test_lf_chat_answers_a_query(tiny_llama, tmp_path):
    result = lf("chat", str(_config(tmp_path, tiny_llama)), "--query", "Who are you?")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()  # a random tiny model: some answer, on stdout alone


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lf_api_serves_chat_completions(tiny_llama, tmp_path):
    port = _free_port()
    script = Path(sys.executable).parent / "lf"
    server = subprocess.Popen([str(script), "api", str(_config(tmp_path, tiny_llama)), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read()[-2000:]
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=5) as response:
                    models = json.load(response)
                break
            except OSError:
                assert time.monotonic() < deadline, "lf api did not answer within 180 s"
                time.sleep(0.5)
        assert models["object"] == "list" and len(models["data"]) == 1
        body = json.dumps({"model": models["data"][0]["id"], "max_tokens": 4,
                           "messages": [{"role": "user", "content": "Who are you?"}]}).encode()
        request = urllib.request.Request(f"{base}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert 1 <= answer["usage"]["completion_tokens"] <= 4
    finally:
        server.terminate()
        server.wait(timeout=30)
