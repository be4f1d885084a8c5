"""The Export tab: merge a run's adapter into its base and write safetensors or GGUF by running
`lf export` as a subprocess, with its log and the files it wrote."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_board import jobs
from lf_board.messages import JOB_STATE_KEYS, abort_folder_job, message
from lf_board.runs import ADAPTER_CONFIG, BOARD_DIR, slug
from lf_board.translations import text

if TYPE_CHECKING:
    from lf_board.app import Board

EXPORT_FORMATS = ("safetensors", "gguf")
GGUF_TYPES = ("f16", "q8_0", "f32")
DTYPES = ("auto", "float16", "bfloat16", "float32")


def export_config(source: Path, export_dir: Path, export_format: str, gguf_type: str, dtype: str, size: float,
                  overwrite: bool) -> dict[str, Any]:
    """The `lf export` config for a run folder (an adapter, or a fully tuned model)."""
    config: dict[str, Any] = {}
    if (source / ADAPTER_CONFIG).is_file():
        config["adapter_name_or_path"] = str(source)
    else:
        config["model_name_or_path"] = str(source)
    config["export_dir"] = str(export_dir)
    config["export_format"] = export_format
    if export_format == "gguf":
        config["export_quantization"] = gguf_type
    else:
        config["export_dtype"] = dtype
        config["export_size"] = float(size)
    if overwrite:
        config["overwrite_export_dir"] = True
    return config


def check_export(config: dict[str, Any]) -> None:
    """What `lf export` checks before loading weights, so a doomed export never starts."""
    from lf_models.export import parse_export_config

    parse_export_config(config, "the board's export form")
    target = Path(config["export_dir"])
    if target.is_dir() and any(target.iterdir()) and not config.get("overwrite_export_dir"):
        raise ValueError(f"export_dir {str(target)!r} is not empty. Choose another folder or tick "
                         "'replace a non-empty folder'.")


def exported_files(export_dir: Path) -> list[tuple[str, int]]:
    if not export_dir.is_dir():
        return []
    return sorted((p.name, p.stat().st_size) for p in export_dir.iterdir() if p.is_file())


def build(board: Board) -> None:
    import gradio as gr

    L, runs = board.labels, board.runs
    with gr.Row():
        source = L.make(gr.Dropdown, "export.source", choices=runs.names(), value=None, allow_custom_value=True,
                        scale=3, elem_id="export-source")
        export_dir = L.make(gr.Textbox, "export.export_dir", value="", scale=3, elem_id="export-dir")
    with gr.Row():
        export_format = L.make(gr.Radio, "export.export_format", choices=list(EXPORT_FORMATS), value="safetensors",
                               elem_id="export-format")
        gguf_type = L.make(gr.Dropdown, "export.export_quantization", choices=list(GGUF_TYPES), value="f16",
                           elem_id="export-quantization")
        dtype = L.make(gr.Dropdown, "export.export_dtype", choices=list(DTYPES), value="auto",
                       elem_id="export-dtype")
        size = L.make(gr.Number, "export.export_size", value=5.0, minimum=0.1, elem_id="export-size")
        overwrite = L.make(gr.Checkbox, "export.overwrite", value=False, elem_id="export-overwrite")
    with gr.Row():
        start = L.make(gr.Button, "export.start", attr="value", variant="primary", elem_id="export-start")
        stop = L.make(gr.Button, "export.abort", attr="value", variant="stop", elem_id="export-abort")
    note = gr.Markdown(elem_id="export-message")
    result = gr.Markdown(elem_id="export-result")
    log_box = L.make(gr.Textbox, "export.log", lines=12, max_lines=12, autoscroll=True, interactive=False,
                     elem_id="export-log")
    current = gr.State("")  # the job folder of the export this page started
    timer = gr.Timer(1.5)

    def default_dir(chosen: str) -> str:
        if not chosen:
            return ""
        return str(board.export_root / slug(Path(chosen).name))

    source.change(default_dir, source, export_dir)
    source.focus(lambda chosen: gr.update(choices=runs.names(), value=chosen), source, source)

    def resolve_source(chosen: str) -> Path:
        path = runs.root / chosen if not Path(chosen).is_absolute() else Path(chosen)
        if not path.is_dir():
            path = Path(chosen).expanduser()
        if not path.is_dir():
            raise ValueError(f"{chosen!r} is not a run folder or a model folder.")
        return path.resolve()

    def on_start(chosen: str, target: str, fmt: str, gguf: str, dt: str, shard: float, replace: bool, lang: str):
        try:
            if not chosen:
                raise ValueError(text(lang, "msg.no_run_chosen"))
            if not target:
                raise ValueError(text(lang, "msg.no_export_dir"))
            target_path = board.export_path(target)
            config = export_config(resolve_source(chosen), target_path, fmt, gguf, dt, shard or 5.0, replace)
            check_export(config)
        except Exception as err:  # bad input: a message in the page, no export started
            return gr.skip(), message(lang, "msg.export_not_started", str(err), error=True)
        folder = runs.root / BOARD_DIR / "exports" / f"{slug(target_path.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        jobs.launch(folder, "export", config)
        return str(folder), message(lang, "msg.export_started", str(target_path))

    start.click(on_start, [source, export_dir, export_format, gguf_type, dtype, size, overwrite, board.lang],
                [current, note])

    stop.click(abort_folder_job, [current, board.lang], note)

    def on_tick(folder: str, lang: str):
        if not folder:
            return gr.skip(), gr.skip()
        job = jobs.Job(Path(folder))
        state = job.state()
        headline = text(lang, "msg.export_status", status=text(lang, JOB_STATE_KEYS[state]))
        if state == "done":
            from lf_data.config import read_config

            target = Path(read_config(job.config_path)["export_dir"])
            files = exported_files(target)
            listing = "\n".join(f"- `{name}` ({size / 1e6:.1f} MB)" for name, size in files)
            headline += "\n\n" + text(lang, "msg.export_done", path=str(target)) + "\n\n" + listing
        return f"**{headline.splitlines()[0]}**" + "\n".join([""] + headline.splitlines()[1:]), jobs.read_console(job)

    timer.tick(on_tick, [current, board.lang], [result, log_box])
    board.demo.load(lambda: gr.update(choices=runs.names()), None, source)
    board.run_lists.append(source)
