"""The board's page: a language switch and one tab per task (Train, Evaluate, Chat, Export).

`create_app` returns the gr.Blocks without launching it, so tests and `lf board` launch it the
same way. Everything a tab shows about runs is read from the runs root on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lf_board.labels import Labels
from lf_board.runs import RunsRoot
from lf_board.translations import DEFAULT_LANGUAGE, LANGUAGES, text

EXAMPLES_DIR = Path("examples")


@dataclass
class Board:
    """What every tab shares: where runs and configs live, the labels, the language switch."""

    runs: RunsRoot
    dataset_dir: str
    config_dir: Path
    labels: Labels
    export_root: Path = Path("models")
    eval_root: Path = Path("evals")
    demo: Any = None
    chat: Any = None
    lang: Any = None
    run_lists: list[Any] = field(default_factory=list)

    def config_path(self, name: str) -> Path:
        """A file name typed in the page -> a .yaml path inside the config folder (never outside it)."""
        name = name.strip()
        if not name:
            raise ValueError("give the config a file name, for example my_run.yaml")
        if not name.endswith((".yaml", ".yml")):
            name += ".yaml"
        root = self.config_dir.resolve()
        path = (root / Path(name).name if "/" not in name else Path(name)).resolve()
        if path.parent != root:
            raise ValueError(f"configs are saved in {root}; give a file name, not a path")
        return path

    def export_path(self, target: str) -> Path:
        """An export folder typed in the page (absolute, or relative to the working folder), kept
        inside the export root."""
        path = Path(target).expanduser().resolve()
        if self.export_root.resolve() not in path.parents:
            raise ValueError(f"exports are written under {self.export_root}; give a folder inside it")
        return path

    def readable_config(self, chosen: str) -> Path:
        """A config the page may load: one in the config folder or a recipe under examples/."""
        path = Path(chosen).expanduser().resolve()
        allowed = [self.config_dir.resolve(), EXAMPLES_DIR.resolve()]
        if not any(root in path.parents for root in allowed) or path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"{chosen!r}: load a .yaml file from {allowed[0]} or {allowed[1]}")
        if not path.is_file():
            raise ValueError(f"{chosen!r} does not exist")
        return path

    def display_path(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def config_choices(self) -> list[str]:
        found = sorted(self.config_dir.glob("*.y*ml")) + sorted(EXAMPLES_DIR.glob("**/*.yaml"))
        return [self.display_path(p) for p in found]


def create_app(runs_root: str | Path = "saves", dataset_dir: str = "data", config_dir: str | Path = "configs",
               export_root: str | Path = "models", eval_root: str | Path = "evals",
               lang: str = DEFAULT_LANGUAGE) -> Any:
    """The board as a gr.Blocks (not launched). Runs are written under runs_root, saved configs under
    config_dir, exports under export_root and evaluation results under eval_root; the page refuses
    paths outside them."""
    import gradio as gr

    from lf_board import chat_tab, eval_tab, export_tab, train_tab

    board = Board(RunsRoot(runs_root), dataset_dir, Path(config_dir), Labels(lang), Path(export_root).resolve(),
                  Path(eval_root).resolve())
    L = board.labels
    with gr.Blocks(title="LF board", analytics_enabled=False) as demo:
        board.demo = demo
        with gr.Row():
            L.make(gr.Markdown, "app.title", attr="value", elem_id="title")
            board.lang = gr.Dropdown(choices=[(name, code) for code, name in LANGUAGES.items()], value=lang,
                                     label="Language / Язык / 语言", scale=0, min_width=180, elem_id="lang")
        L.make(gr.Markdown, "app.intro", attr="value", elem_id="intro")
        with gr.Tabs():
            with L.make(gr.Tab, "tab.train", elem_id="tab-train"):
                train_tab.build(board)
            with L.make(gr.Tab, "tab.evaluate", elem_id="tab-evaluate"):
                eval_tab.build(board)
            with L.make(gr.Tab, "tab.chat", elem_id="tab-chat"):
                chat_tab.build(board)
            with L.make(gr.Tab, "tab.export", elem_id="tab-export"):
                export_tab.build(board)
        board.lang.change(L.updates, board.lang, L.components)
    demo.board = board  # for tests: the labels and keys this page uses
    return demo


def launch(demo: Any, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, block: bool = True, auth_message: str | None = None) -> Any:
    """Serve a page (the board's or `lf webchat`'s); `auth_message`: the sign-in text (the board's by default)."""
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, ssr_mode=False,
                       prevent_thread_lock=not block, quiet=not block, footer_links=["api"],
                       auth_message=(auth_message or text(DEFAULT_LANGUAGE, "app.auth")) if auth else None)
