"""The terminal chat of `lf chat`: streamed answers, the conversation history, a system prompt,
`clear` to start over and `exit` to quit; `--query` answers one question for scripts."""

from __future__ import annotations

from typing import TextIO

from lf_serve.engine import ChatEngine
from lf_serve.errors import RequestError

HELP = "Type a message and press Enter. `clear` forgets the conversation, `exit` quits."


def answer(engine: ChatEngine, history: list[dict[str, str]], system: str | None, stream: bool,
           stdout: TextIO) -> str:
    if not stream:
        text = engine.chat(history, system=system, n=1)[0].text
        stdout.write(text)
    else:
        text = ""
        for piece in engine.stream_chat(history, system=system):
            stdout.write(piece)
            stdout.flush()
            text += piece
    stdout.write("\n")
    stdout.flush()
    return text


def chat_loop(engine: ChatEngine, system: str | None, query: str | None, stream: bool, stdin: TextIO,
              stdout: TextIO) -> int:
    if query is not None:
        answer(engine, [{"role": "user", "content": query}], system, stream, stdout)
        return 0
    interactive = stdin.isatty()
    if interactive:
        stdout.write(f"Chatting with {engine.model_name}. {HELP}\n")
    history: list[dict[str, str]] = []
    while True:
        if interactive:
            stdout.write("\nUser: ")
            stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "exit":
            return 0
        if text == "clear":
            history = []
            stdout.write("History cleared.\n")
            continue
        history.append({"role": "user", "content": text})
        stdout.write("Assistant: ")
        try:
            reply = answer(engine, history, system, stream, stdout)
        except RequestError as err:  # e.g. the conversation outgrew the context
            history.pop()
            stdout.write(f"\n[error] {err.message} Type `clear` to start over.\n")
            continue
        history.append({"role": "assistant", "content": reply})
