"""The Chat tab: load a run's adapter on its base (or a merged or base model) through lf-serve's
engine, chat with streamed answers, a system prompt, generation settings, tools and uploaded images;
unload."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lf_board.messages import message
from lf_board.serve_config import engine_config
from lf_board.translations import text
from lf_data.aligner import PLACEHOLDERS

if TYPE_CHECKING:
    from lf_board.app import Board
    from lf_board.labels import Labels


class ChatSession:
    """The one model the board holds for chatting (a second load replaces it)."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.name = ""
        self.lock = threading.Lock()

    def load(self, config: dict[str, Any], name: str) -> None:
        from lf_serve import load_engine

        with self.lock:
            self.unload()
            self.engine = load_engine(config, "the board's chat tab")
            self.name = name

    def unload(self) -> bool:
        engine, self.engine, self.name = self.engine, None, ""
        if engine is None:
            return False
        engine.close()
        del engine
        import gc

        gc.collect()
        return True




def _file_path(part: dict[str, Any]) -> str | None:
    """The path of a chatbot file part ({"type": "file", "file": {"path"}} as gradio hands it back, or
    {"path"} as the page writes it)."""
    data = part.get("file") if isinstance(part.get("file"), dict) else part
    path = data.get("path")
    return path if isinstance(path, str) and path else None


def turn(content: Any) -> tuple[str, list[str]]:
    """Chatbot message content (a string, or gradio's list of typed parts) as the engine's message text,
    with an `<image>` placeholder where each image was, and those images' paths in order."""
    if isinstance(content, str):
        return content, []
    if isinstance(content, dict):
        path = _file_path(content)
        return (PLACEHOLDERS["images"], [path]) if path else (str(content.get("text") or ""), [])
    if isinstance(content, (list, tuple)):
        parts = [turn(part) for part in content]
        return "".join(t for t, _ in parts), [p for _, paths in parts for p in paths]
    return "", []


def _shown(content: Any) -> Any:
    """Chatbot message content as the page writes it back: text, and {"path"} for each image."""
    if isinstance(content, dict):
        path = _file_path(content)
        return {"path": path} if path else str(content.get("text") or "")
    if isinstance(content, (list, tuple)):
        return [_shown(part) for part in content]
    return content


def send(session: ChatSession, text_in: str, image: str | None, history: list, sys_prompt: str, tools_json: str,
         temp: float, p: float, max_tokens: float, lang: str) -> Iterator[tuple[Any, Any, Any, Any]]:
    """One turn (a message, and an uploaded image when there is one): (chatbot, message box, image box,
    status) as the answer streams. Every image of the conversation goes to the engine with it."""
    import gradio as gr

    history = [{"role": m["role"], "content": _shown(m["content"])} for m in history or []]
    if session.engine is None:
        yield history, text_in, gr.skip(), message(lang, "msg.chat_nothing_loaded", error=True)
        return
    if not (text_in or "").strip() and not image:
        yield history, text_in, gr.skip(), gr.skip()
        return
    if (tools_json or "").strip():
        try:
            json.loads(tools_json)
        except json.JSONDecodeError as err:
            yield history, text_in, gr.skip(), message(lang, "msg.bad_tools", str(err), error=True)
            return
    shown = history + [{"role": "user", "content": [{"path": image}, text_in or ""] if image else text_in}]
    messages, images = [], []
    for m in shown:
        content, paths = turn(m["content"])
        messages.append({"role": m["role"], "content": content})
        images += paths
    shown = shown + [{"role": "assistant", "content": ""}]
    yield shown, "", None, gr.skip()
    try:
        for piece in session.engine.stream_chat(messages, system=sys_prompt or None, tools=tools_json or None,
                                                images=images or None, temperature=float(temp), top_p=float(p),
                                                max_new_tokens=int(max_tokens)):
            shown[-1]["content"] += piece
            yield shown, "", None, gr.skip()
    except Exception as err:
        yield shown, "", None, message(lang, "msg.chat_failed", str(err), error=True)
        return
    yield shown, "", None, text(lang, "msg.chat_answered", name=session.name)


@dataclass(frozen=True)
class Defaults:
    """The generation settings a conversation starts from (the sliders' first positions)."""

    temperature: float = 0.7
    top_p: float = 0.7
    max_new_tokens: int = 256


def conversation(L: Labels, session: ChatSession, lang: Any, defaults: Defaults | None = None, images: bool = True,
                 concurrency: int = 1) -> Any:
    """The conversation area, wired to `session`: the chatbot, the message box, Send and Clear, an image
    upload (`images`), the system prompt, tools and the generation settings. `lang` is the component
    holding the page's language; `concurrency`: answers streamed at once (the engine batches them).
    Returns the status line it writes to."""
    import gradio as gr

    defaults = defaults or Defaults()
    status = gr.Markdown(elem_id="chat-status")
    with gr.Row():
        with gr.Column(scale=3):
            bot = L.make(gr.Chatbot, "chat.chatbot", height=360, elem_id="chat-bot")
            with gr.Row():
                user = L.make(gr.Textbox, "chat.input", scale=4, elem_id="chat-input")
                send_button = L.make(gr.Button, "chat.send", attr="value", variant="primary", scale=1,
                                     elem_id="chat-send")
                clear = L.make(gr.Button, "chat.clear", attr="value", scale=1, elem_id="chat-clear")
            image = L.make(gr.Image, "chat.image", type="filepath", sources=["upload", "clipboard"], height=160,
                           visible=images, elem_id="chat-image")
        with gr.Column(scale=2):
            system = L.make(gr.Textbox, "chat.system", lines=2, elem_id="chat-system")
            tools = L.make(gr.Code, "chat.tools", language="json", value="", elem_id="chat-tools")
            # the ranges hold any value a config may start from (temperature has no upper bound, top_p > 0)
            temperature = L.make(gr.Slider, "chat.temperature", minimum=0.0, maximum=max(1.5, defaults.temperature),
                                 step=0.05, value=defaults.temperature, elem_id="chat-temperature")
            top_p = L.make(gr.Slider, "chat.top_p", minimum=min(0.05, defaults.top_p), maximum=1.0, step=0.05,
                           value=defaults.top_p, elem_id="chat-top-p")
            max_new = L.make(gr.Slider, "chat.max_new_tokens", minimum=1, maximum=max(2048, defaults.max_new_tokens),
                             step=1, value=defaults.max_new_tokens, elem_id="chat-max-new-tokens")

    def on_send(text_in: str, picture: str | None, history: list, sys_prompt: str, tools_json: str, temp: float,
                p: float, max_tokens: float, lang: str):
        yield from send(session, text_in, picture, history, sys_prompt, tools_json, temp, p, max_tokens, lang)

    inputs = [user, image, bot, system, tools, temperature, top_p, max_new, lang]
    send_button.click(on_send, inputs, [bot, user, image, status], concurrency_limit=concurrency,
                      concurrency_id="chat", api_name="send")
    user.submit(on_send, inputs, [bot, user, image, status], concurrency_limit=concurrency, concurrency_id="chat",
                api_name=False)
    clear.click(lambda: ([], "", None), None, [bot, user, image], api_name=False)
    return status


def build(board: Board) -> None:
    import gradio as gr

    from lf_data.templates import TEMPLATES

    L, runs = board.labels, board.runs
    session = ChatSession()
    board.chat = session
    with gr.Row():
        source = L.make(gr.Dropdown, "chat.source", choices=runs.names(), value=None, allow_custom_value=True,
                        scale=3, elem_id="chat-source")
        template = L.make(gr.Dropdown, "chat.template", choices=[("—", "")] + sorted(TEMPLATES), value="",
                          elem_id="chat-template")
        load = L.make(gr.Button, "chat.load", attr="value", variant="primary", elem_id="chat-load")
        unload = L.make(gr.Button, "chat.unload", attr="value", elem_id="chat-unload")
    status = conversation(L, session, board.lang)

    def on_load(chosen: str, tmpl: str, lang: str):
        if not chosen:
            return message(lang, "msg.no_model_chosen", error=True)
        try:
            config = engine_config(chosen, runs.root, tmpl)
            session.load(config, chosen)
        except Exception as err:  # bad input or a model that does not load: a message, the page stays up
            return message(lang, "msg.chat_load_failed", str(err), error=True)
        return message(lang, "msg.chat_loaded", chosen)

    load.click(on_load, [source, template, board.lang], status)
    unload.click(lambda lang: message(lang, "msg.chat_unloaded" if session.unload() else "msg.chat_nothing_loaded"),
                 board.lang, status)
    source.focus(lambda chosen: gr.update(choices=runs.names(), value=chosen), source, source)
    board.demo.load(lambda: gr.update(choices=runs.names()), None, source)
