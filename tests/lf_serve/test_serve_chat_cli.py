"""`lf chat`: --query answers once; the interactive loop keeps history, obeys clear and exit, and attaches
images and videos to a turn with /image and /video."""

from __future__ import annotations

import io

import yaml
from serve_helpers import IDENTITY_A, IDENTITY_Q

from lf_data.cli import main
from lf_serve.chat_cli import chat_loop


def test_lf_chat_query_answers_and_exits(tool_model, tmp_path, capsys):
    """`lf chat CONFIG --query Q key=value` through the `lf` entry point (in-process: a subprocess would
    spend ~10 s importing torch again); stdout carries the answer alone, logs go to stderr."""
    config = tmp_path / "chat.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(tool_model), "template": "chatml",
                                      "temperature": 0.7, "max_new_tokens": 32}))
    assert main(["chat", str(config), "--query", IDENTITY_Q, "temperature=0"]) == 0
    out = capsys.readouterr().out
    assert out == IDENTITY_A + "\n"
    assert main(["chat", str(config), "--query", IDENTITY_Q, "--no-stream", "temperature=0", "max_new_tokens=3"]) == 0
    short = capsys.readouterr().out.strip()
    assert short and IDENTITY_A.startswith(short) and short != IDENTITY_A
    assert main(["chat", str(config), "temprature=0"]) == 1
    assert "Did you mean 'temperature'" in capsys.readouterr().err


class Recorder:
    """Wraps an engine and records the conversations it is asked to answer."""

    def __init__(self, engine) -> None:
        self.engine, self.calls, self.media = engine, [], []
        self.model_name = engine.model_name
        self.check_media = engine.check_media

    def stream_chat(self, messages, system=None, **kw):
        self.calls.append(([dict(m) for m in messages], system))
        self.media.append(kw)
        return self.engine.stream_chat(messages, system=system, **kw)


def test_chat_loop_history_clear_and_exit(tool_engine):
    recorder = Recorder(tool_engine)
    stdin = io.StringIO(f"{IDENTITY_Q}\nAnd then?\nclear\n{IDENTITY_Q}\nexit\nnever read\n")
    stdout = io.StringIO()
    assert chat_loop(recorder, system="Be brief.", query=None, stream=True, stdin=stdin, stdout=stdout) == 0
    first, second, third = recorder.calls
    assert first == ([{"role": "user", "content": IDENTITY_Q}], "Be brief.")
    assert second[0] == [{"role": "user", "content": IDENTITY_Q}, {"role": "assistant", "content": first_answer(stdout)},
                         {"role": "user", "content": "And then?"}]
    assert third[0] == [{"role": "user", "content": IDENTITY_Q}]  # history cleared
    assert "History cleared." in stdout.getvalue()
    assert len(recorder.calls) == 3  # nothing after exit


def first_answer(stdout: io.StringIO) -> str:
    return stdout.getvalue().split("Assistant: ")[1].split("\n")[0]


def test_check_says_what_would_be_served_and_loads_nothing(tiny_llama, monkeypatch, capsys):
    import lf_serve.engine

    def no_loading(*args, **kwargs):
        raise AssertionError("--check must not load the model")

    monkeypatch.setattr(lf_serve.engine, "load_engine", no_loading)
    monkeypatch.delenv("API_KEY", raising=False)
    assert main(["chat", f"model_name_or_path={tiny_llama}", "temperature=0", "--check"]) == 0
    out = capsys.readouterr().out
    assert "lf chat: the command line is valid." in out and "template llama3" in out  # the family's: no own template
    assert yaml.safe_load(out.split("resolved config:\n", 1)[1])["temperature"] == 0
    assert main(["api", f"model_name_or_path={tiny_llama}", "template=chatml", "--host", "0.0.0.0", "--check"]) == 0
    out = capsys.readouterr().out
    assert "template chatml" in out and "listening on http://0.0.0.0:8000/v1, no API key" in out
    assert "without API_KEY" in out
    assert main(["api", f"model_name_or_path={tiny_llama}", "temprature=0", "--check"]) == 1
    assert "Did you mean 'temperature'?" in capsys.readouterr().err


def test_chat_loop_attaches_images_and_videos_to_a_turn(vlm_engine, tmp_path):
    """`/image PATH` and `/video PATH` attach files to the next message (placeholders at its start unless it
    places them itself); they stay with the conversation until `clear`; a kind the model does not take, or
    a missing file, is a message and nothing is attached."""
    from serve_helpers import wav_bytes, write_video

    picture = tmp_path / "cat.png"
    make_picture().save(picture)
    clip = write_video(tmp_path / "clip.mp4")
    (tmp_path / "tone.wav").write_bytes(wav_bytes())
    recorder = Recorder(vlm_engine)
    lines = [f"/image {picture}", "What is this?", f"/video {clip}", "And in <video>, compared with it?",
             f"/audio {tmp_path / 'tone.wav'}", f"/image {tmp_path / 'missing.png'}", "/image", "clear", "Hi", "exit"]
    stdout = io.StringIO()
    assert chat_loop(recorder, system=None, query=None, stream=True, stdin=io.StringIO("\n".join(lines) + "\n"),
                     stdout=stdout) == 0
    out = stdout.getvalue()
    assert "Attached cat.png to your next message." in out and "Attached clip.mp4 to your next message." in out
    assert "[error] model 'tiny-vl' does not take audios" in out
    assert f"[error] '{tmp_path / 'missing.png'}' is not a file." in out and "[error] give a file: /image PATH" in out
    first, second, third = recorder.calls
    assert first[0] == [{"role": "user", "content": "<image>What is this?"}]
    assert recorder.media[0] == {"images": [str(picture)]}
    assert second[0][2:] == [{"role": "user", "content": "And in <video>, compared with it?"}]
    assert recorder.media[1] == {"images": [str(picture)], "videos": [str(clip)]}
    assert third[0] == [{"role": "user", "content": "Hi"}] and recorder.media[2] == {}  # cleared
    answers = out.split("Assistant: ")[1:]
    assert answers[0].split("\n")[0] == vlm_engine.chat(first[0], images=[picture])[0].text
    assert answers[1].split("\n")[0] == vlm_engine.chat(second[0], images=[picture], videos=[clip])[0].text


def make_picture():
    import numpy as np
    from PIL import Image

    return Image.fromarray((np.random.RandomState(3).rand(60, 80, 3) * 255).astype("uint8"))


def test_fastapi_root_path_serves_the_api_behind_a_proxy_prefix(tiny_engine, tiny_llama, monkeypatch, capsys):
    """LlamaFactory's FASTAPI_ROOT_PATH: the proxy strips the prefix, the docs link through it."""
    from fastapi.testclient import TestClient

    from lf_serve.api.app import create_app

    client = TestClient(create_app(tiny_engine, root_path="/llm"))
    assert client.get("/v1/models").json()["data"][0]["id"] == tiny_engine.model_name
    assert "/llm/openapi.json" in client.get("/docs").text
    monkeypatch.delenv("API_KEY", raising=False)
    monkeypatch.setenv("FASTAPI_ROOT_PATH", "/llm/")
    assert main(["api", f"model_name_or_path={tiny_llama}", "template=chatml", "--check"]) == 0
    assert "served as /llm/v1 behind a proxy" in capsys.readouterr().out
    monkeypatch.setenv("FASTAPI_ROOT_PATH", "llm")
    assert main(["api", f"model_name_or_path={tiny_llama}", "--check"]) == 1
    assert "FASTAPI_ROOT_PATH 'llm' must be a path that starts with /" in capsys.readouterr().err
