"""The terminal chat of `lf chat`: streamed answers, the conversation history, a system prompt,
`clear` to start over and `exit` to quit; `--query` answers one question for scripts.

`/image PATH`, `/video PATH` and `/audio PATH` attach a local file to the next message: its placeholder
(`<image>` ...) goes at the start of that message unless the message writes its own, and the file stays
with the conversation until `clear`. A model that does not take the kind says so at once."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from lf_data.aligner import PLACEHOLDERS
from lf_serve.engine import ChatEngine
from lf_serve.errors import RequestError

HELP = ("Type a message and press Enter. `/image PATH`, `/video PATH` or `/audio PATH` attaches a file to your "
        "next message; `clear` forgets the conversation, `exit` quits.")
ATTACH = {"/image": "images", "/video": "videos", "/audio": "audios"}


def answer(engine: ChatEngine, history: list[dict[str, str]], system: str | None, stream: bool,
           stdout: TextIO, media: dict[str, list[str]] | None = None) -> str:
    media = media or {}
    if not stream:
        text = engine.chat(history, system=system, n=1, **media)[0].text
        stdout.write(text)
    else:
        text = ""
        for piece in engine.stream_chat(history, system=system, **media):
            stdout.write(piece)
            stdout.flush()
            text += piece
    stdout.write("\n")
    stdout.flush()
    return text


def attach(engine: ChatEngine, command: str, argument: str, media: dict[str, list[str]],
           pending: dict[str, list[str]]) -> str:
    """`/image PATH` (or /video, /audio): the file joins `pending`; the line to show the user."""
    kind = ATTACH[command]
    if not argument:
        return f"[error] give a file: {command} PATH"
    path = Path(argument).expanduser()
    if not path.is_file():
        return f"[error] {argument!r} is not a file."
    try:
        engine.check_media({kind: len(media[kind]) + len(pending[kind]) + 1})
    except RequestError as err:
        return f"[error] {err.message}"
    pending[kind].append(str(path.resolve()))
    return f"Attached {path.name} to your next message."


def _with_placeholders(text: str, pending: dict[str, list[str]]) -> str:
    """The message with one placeholder per attached item at its start, for each kind it does not place itself."""
    return "".join(PLACEHOLDERS[kind] * len(items) for kind, items in pending.items()
                   if items and PLACEHOLDERS[kind] not in text) + text


def chat_loop(engine: ChatEngine, system: str | None, query: str | None, stream: bool, stdin: TextIO,
              stdout: TextIO) -> int:
    if query is not None:
        answer(engine, [{"role": "user", "content": query}], system, stream, stdout)
        return 0
    interactive = stdin.isatty()
    if interactive:
        stdout.write(f"Chatting with {engine.model_name}. {HELP}\n")
    history: list[dict[str, str]] = []
    media: dict[str, list[str]] = {kind: [] for kind in PLACEHOLDERS}  # the conversation's items, in order
    pending: dict[str, list[str]] = {kind: [] for kind in PLACEHOLDERS}  # attached to the next message
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
            media = {kind: [] for kind in PLACEHOLDERS}
            pending = {kind: [] for kind in PLACEHOLDERS}
            stdout.write("History cleared.\n")
            continue
        command, _, argument = text.partition(" ")
        if command in ATTACH:
            stdout.write(attach(engine, command, argument.strip(), media, pending) + "\n")
            continue
        history.append({"role": "user", "content": _with_placeholders(text, pending)})
        turn = {kind: media[kind] + pending[kind] for kind in PLACEHOLDERS}
        stdout.write("Assistant: ")
        try:
            reply = answer(engine, history, system, stream, stdout, {k: v for k, v in turn.items() if v})
        except RequestError as err:  # e.g. the conversation outgrew the context, or a file did not read
            history.pop()
            pending = {kind: [] for kind in PLACEHOLDERS}
            stdout.write(f"\n[error] {err.message} Type `clear` to start over.\n")
            continue
        media, pending = turn, {kind: [] for kind in PLACEHOLDERS}
        history.append({"role": "assistant", "content": reply})
