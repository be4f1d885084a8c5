"""`lf webchat` (LlamaFactory's `webchat`): an inference YAML's model in a browser page, checked before
it loads, answering through gradio's own client exactly as the engine answers; `lf webui` is the board."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lf_data.cli import main as lf

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_gradio_env(monkeypatch):
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "GRADIO_SHARE"):
        monkeypatch.delenv(name, raising=False)


def test_webchat_checks_its_config_and_flags_before_loading(tiny_llama, capsys):
    model = f"model_name_or_path={tiny_llama}"
    assert lf(["webchat", model, "template=chatml", "--port", "7999", "--auth", "me:secret", "--check"]) == 0
    out = capsys.readouterr().out
    assert "lf webchat: the command line is valid." in out
    assert "page at http://127.0.0.1:7999, sign-in required" in out and "template chatml" in out
    assert lf(["webchat", model, "--host", "0.0.0.0", "--check"]) == 0
    assert "listens on 0.0.0.0 without --auth" in capsys.readouterr().out
    for args, needle in [(["--lang", "fr"], "--lang 'fr': choose one of en, ru, zh."),
                         (["--auth", "nopassword"], "--auth takes USER:PASSWORD"),
                         (["--port", "http"], "--port/GRADIO_SERVER_PORT 'http' must be a port number"),
                         (["temperature=-1"], "temperature"),
                         (["no_such_key=1"], "unknown config key 'no_such_key'")]:
        assert lf(["webchat", model, *args]) == 1, args
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_webui_is_the_board():
    result = subprocess.run([sys.executable, "-m", "lf_data.cli", "webui", "--help"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lf webui") and "--runs-root" in result.stdout


def test_the_page_starts_from_the_configs_generation_keys(tiny_llama):
    from lf_board.webchat import create_webchat
    from lf_serve.engine import load_engine

    engine = load_engine({"model_name_or_path": str(tiny_llama), "template": "chatml", "do_sample": False,
                          "top_p": 0.9, "max_new_tokens": 3000, "max_batch_size": 6})
    try:
        demo = create_webchat(engine, "ru")
        by_id = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
        assert by_id["chat-temperature"].value == 0.0  # do_sample: false answers greedily
        assert by_id["chat-top-p"].value == 0.9
        assert by_id["chat-max-new-tokens"].value == 3000 and by_id["chat-max-new-tokens"].maximum == 3000
        assert by_id["chat-image"].visible is False  # a text model takes no image
        assert by_id["chat-send"].value == "Отправить"  # the page opens in the language asked for
        send = [fn for fn in demo.fns.values() if fn.api_name == "send"]
        assert len(send) == 1 and send[0].concurrency_limit == 6  # visitors' answers share the running batch
    finally:
        engine.close()


def test_lf_webchat_answers_through_gradios_client_as_the_engine_does(tiny_llama, tmp_path):
    from gradio_client import Client

    from lf_board.chat_tab import turn
    from lf_serve.engine import load_engine

    config = {"model_name_or_path": str(tiny_llama), "template": "chatml", "do_sample": False, "max_new_tokens": 8}
    port = free_port()
    log = tmp_path / "webchat.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "lf"), "webchat",
                                 *(f"{k}={v}" for k, v in config.items()), "--port", str(port)],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 240
        while "Running on local URL" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert f"Chatting with '{tiny_llama.name}' in the browser" in log.read_text()
        client = Client(url, verbose=False)
        history, box, image, status = client.predict("Who are you?", None, [], "", "", 0.0, 0.7, 8, "en",
                                                     api_name="/send")
        engine = load_engine(config)
        try:
            expected = "".join(engine.stream_chat([{"role": "user", "content": "Who are you?"}], temperature=0.0,
                                                  top_p=0.7, max_new_tokens=8))
        finally:
            engine.close()
        assert expected
        # gradio hands the chatbot back as typed parts; `turn` reads them as the next turn will
        assert [(m["role"], turn(m["content"])[0]) for m in history] == [("user", "Who are you?"),
                                                                         ("assistant", expected)]
        assert box == "" and "answered" in status
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gradios_own_variables_choose_host_port_and_share_as_llamafactory_users_set_them(tiny_llama, monkeypatch,
                                                                                        capsys):
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7901")
    monkeypatch.setenv("GRADIO_SHARE", "1")
    assert lf(["webchat", f"model_name_or_path={tiny_llama}", "--check"]) == 0
    out = capsys.readouterr().out
    assert "page at http://0.0.0.0:7901" in out and "with a public share link" in out
    assert "lf webchat is shared through a public link without --auth" in out
    assert lf(["webchat", f"model_name_or_path={tiny_llama}", "--host", "127.0.0.1", "--port", "7902",
               "--check"]) == 0  # flags win
    assert "page at http://127.0.0.1:7902" in capsys.readouterr().out


def test_the_board_reads_gradios_variables_too_and_warns_before_it_opens(monkeypatch, capsys):
    from lf_board.commands import _exposure

    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    assert lf(["webui"]) == 1  # checked before gradio (or the page) loads
    assert "--port/GRADIO_SERVER_PORT 'http' must be a port number" in capsys.readouterr().err
    assert _exposure("lf board", "127.0.0.1", False, None, "start runs") is None
    assert "listens on 0.0.0.0 without --auth" in _exposure("lf board", "0.0.0.0", False, None, "start runs")
    assert "shared through a public link" in _exposure("lf board", "127.0.0.1", True, None, "start runs")
    assert _exposure("lf board", "0.0.0.0", True, ("me", "secret"), "start runs") is None
