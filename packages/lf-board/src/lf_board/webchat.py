"""`lf webchat`: one model from an inference config, chatted with in a browser page.

LlamaFactory's `webchat` reads the same YAML as its `chat` and `api`; so does this page. The model is
loaded before the page opens (a bad key stops the command first), and the conversation area is the
board's Chat tab's own, so the two behave alike. Visitors' answers are streamed at once, up to the
engine's running batch, instead of queueing behind one another.
"""

from __future__ import annotations

from typing import Any

from lf_board.chat_tab import ChatSession, Defaults, conversation
from lf_board.labels import Labels
from lf_board.translations import LANGUAGES


def defaults_for(engine: Any) -> Defaults:
    """The sliders' first positions: the config's generation keys (do_sample: false is temperature 0)."""
    generating = engine.generating
    return Defaults(temperature=generating.temperature if generating.do_sample else 0.0, top_p=generating.top_p,
                    max_new_tokens=generating.max_new_tokens)


def create_webchat(engine: Any, lang: str = "en") -> Any:
    """The page (a gr.Blocks, not launched) for a loaded engine; closing the engine stays the caller's."""
    import gradio as gr

    session = ChatSession()
    session.engine, session.name = engine, engine.model_name
    L = Labels(lang)
    template = getattr(engine.template, "name", "") or "auto"
    with gr.Blocks(title=f"LF chat: {engine.model_name}", analytics_enabled=False) as demo:
        with gr.Row():
            L.make(gr.Markdown, "webchat.title", attr="value", elem_id="title")
            choice = gr.Dropdown(choices=[(name, code) for code, name in LANGUAGES.items()], value=lang,
                                 label="Language / Язык / 语言", scale=0, min_width=180, elem_id="lang")
        gr.Markdown(f"`{engine.model_name}` · template `{template}`", elem_id="webchat-model")
        conversation(L, session, choice, defaults_for(engine), images="images" in engine.markers,
                     concurrency=engine.plan.infer.max_batch_size)
        choice.change(L.updates, choice, L.components, api_name=False)
    demo.session = session  # for tests
    return demo
