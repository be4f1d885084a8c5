"""`lf chat`: --query answers once; the interactive loop keeps history, obeys clear and exit."""

from __future__ import annotations

import io
import subprocess
import sys

import yaml
from conftest import IDENTITY_A, IDENTITY_Q

from lf_serve.chat_cli import chat_loop


def test_lf_chat_query_answers_and_exits(tool_model, tmp_path):
    config = tmp_path / "chat.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(tool_model), "template": "chatml",
                                      "temperature": 0, "max_new_tokens": 32}))
    done = subprocess.run([sys.executable, "-m", "lf_data.cli", "chat", str(config), "--query", IDENTITY_Q],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == IDENTITY_A


class Recorder:
    """Wraps an engine and records the conversations it is asked to answer."""

    def __init__(self, engine) -> None:
        self.engine, self.calls = engine, []
        self.model_name = engine.model_name

    def stream_chat(self, messages, system=None, **kw):
        self.calls.append(([dict(m) for m in messages], system))
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
