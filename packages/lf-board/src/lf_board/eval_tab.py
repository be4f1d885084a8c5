"""The Evaluate tab: run `lf eval` on a trained output as a subprocess (a multiple-choice benchmark,
or predict + BLEU/ROUGE on a dataset) and show its results table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_board import jobs
from lf_board.messages import JOB_STATE_KEYS, abort_folder_job, message
from lf_board.runs import BOARD_DIR, slug
from lf_board.serve_config import engine_config
from lf_board.translations import text

if TYPE_CHECKING:
    from lf_board.app import Board

PREDICT = "predict"
BENCHMARKS = ("mmlu_test", "cmmlu_test", "ceval_val")
RESULTS_FILES = ("results.json", "predict_results.json")  # multiple choice, predict


def eval_config(model: dict[str, Any], task: str, save_dir: Path, *, task_dir: str, n_shot: int,
                dataset: list[str], dataset_dir: str, max_samples: int, batch_size: int,
                max_new_tokens: int) -> dict[str, Any]:
    """The `lf eval` config: the model keys (as the Chat tab builds them) plus the task's keys."""
    config = {k: v for k, v in model.items() if k != "infer_backend"}
    config.update(task=task, save_dir=str(save_dir), batch_size=int(batch_size))
    if task == PREDICT:
        config.update(dataset=list(dataset), dataset_dir=dataset_dir, max_new_tokens=int(max_new_tokens),
                      do_sample=False)
        if max_samples:
            config["max_samples"] = int(max_samples)
    else:
        config.update(task_dir=task_dir, n_shot=int(n_shot))
    return config


def check_eval(config: dict[str, Any]) -> None:
    """`lf eval`'s own checks of keys, combinations and the model reference, before anything loads."""
    from lf_data.errors import ConfigError
    from lf_eval.run import parse_eval_config

    parse_eval_config(config, "the board's evaluate form")
    if config["task"] == PREDICT and not config.get("dataset"):
        raise ConfigError("task predict needs at least one dataset to answer.")


def results_table(save_dir: Path) -> tuple[list[str], list[list[Any]]]:
    """The results `lf eval` wrote, as table headers and rows (empty when nothing is there yet)."""
    for name in RESULTS_FILES:
        path = save_dir / name
        if path.is_file():
            try:
                results = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                return [], []
            break
    else:
        return [], []
    if isinstance(results.get("subjects"), dict):
        rows = [[s, r.get("category", ""), r.get("questions"), r.get("accuracy")]
                for s, r in results["subjects"].items()]
        rows += [[c, "", r.get("questions"), r.get("accuracy")] for c, r in results.get("categories", {}).items()]
        rows.append(["Average", "", results.get("questions"), results.get("average")])
        return ["subject", "category", "questions", "accuracy"], rows
    rows = [[key, value] for key, value in results.items() if isinstance(value, (int, float, str))]
    return ["metric", "value"], rows


def build(board: Board) -> None:
    import gradio as gr

    from lf_board.data_preview import dataset_names

    L, runs = board.labels, board.runs
    with gr.Row():
        source = L.make(gr.Dropdown, "eval.source", choices=runs.names(), value=None, allow_custom_value=True,
                        scale=3, elem_id="eval-source")
        task = L.make(gr.Dropdown, "eval.task", choices=[PREDICT, *BENCHMARKS], value=PREDICT,
                      allow_custom_value=True, elem_id="eval-task")
        batch_size = L.make(gr.Number, "eval.batch_size", value=4, precision=0, minimum=1, elem_id="eval-batch-size")
    with gr.Row():
        dataset_dir = L.make(gr.Textbox, "eval.dataset_dir", value=board.dataset_dir, elem_id="eval-dataset-dir")
        dataset = L.make(gr.Dropdown, "eval.dataset", choices=dataset_names(board.dataset_dir), value=[],
                         multiselect=True, elem_id="eval-dataset")
        max_samples = L.make(gr.Number, "eval.max_samples", value=50, precision=0, minimum=0, elem_id="eval-max-samples")
        max_new = L.make(gr.Number, "eval.max_new_tokens", value=128, precision=0, minimum=1,
                         elem_id="eval-max-new-tokens")
    with gr.Row():
        task_dir = L.make(gr.Textbox, "eval.task_dir", value="evaluation", elem_id="eval-task-dir")
        n_shot = L.make(gr.Number, "eval.n_shot", value=5, precision=0, minimum=0, elem_id="eval-n-shot")
    with gr.Row():
        start = L.make(gr.Button, "eval.start", attr="value", variant="primary", elem_id="eval-start")
        stop = L.make(gr.Button, "eval.abort", attr="value", variant="stop", elem_id="eval-abort")
    note = gr.Markdown(elem_id="eval-message")
    result = gr.Markdown(elem_id="eval-status")
    table = L.make(gr.Dataframe, "eval.results", interactive=False, elem_id="eval-results")
    log_box = L.make(gr.Textbox, "eval.log", lines=10, max_lines=10, autoscroll=True, interactive=False,
                     elem_id="eval-log")
    current = gr.State("")
    timer = gr.Timer(2.0)

    dataset_dir.change(lambda d, chosen: gr.update(choices=dataset_names(d),
                                                   value=[n for n in chosen or [] if n in dataset_names(d)]),
                       [dataset_dir, dataset], dataset)

    def on_start(chosen, task_name, batch, ddir, names, samples, new_tokens, tdir, shots, lang):
        try:
            if not chosen:
                raise ValueError(text(lang, "msg.no_model_chosen"))
            stamp = time.strftime("%Y%m%d-%H%M%S")
            save_dir = board.eval_root / slug(chosen) / f"{slug(task_name or 'task')}-{stamp}"
            config = eval_config(engine_config(chosen, runs.root), task_name or "", save_dir, task_dir=tdir,
                                 n_shot=shots or 0, dataset=names or [], dataset_dir=ddir, max_samples=samples or 0,
                                 batch_size=batch or 1, max_new_tokens=new_tokens or 1)
            check_eval(config)
        except Exception as err:  # bad input: a message in the page, no evaluation started
            return gr.skip(), message(lang, "msg.eval_not_started", str(err), error=True)
        folder = runs.root / BOARD_DIR / "evals" / f"{slug(chosen)}-{slug(task_name)}-{stamp}"
        jobs.launch(folder, "eval", config)
        return str(folder), message(lang, "msg.eval_started", str(save_dir))

    start.click(on_start, [source, task, batch_size, dataset_dir, dataset, max_samples, max_new, task_dir, n_shot,
                           board.lang], [current, note])

    stop.click(abort_folder_job, [current, board.lang], note)

    def on_tick(folder: str, lang: str):
        if not folder:
            return gr.skip(), gr.skip(), gr.skip()
        job = jobs.Job(Path(folder))
        state = job.state()
        status = f"**{text(lang, 'msg.eval_status', status=text(lang, JOB_STATE_KEYS[state]))}**"
        table_update: Any = gr.skip()
        if state == "done":
            from lf_data.config import read_config

            save_dir = Path(read_config(job.config_path)["save_dir"])
            headers, rows = results_table(save_dir)
            if rows:
                import pandas as pd

                table_update = pd.DataFrame(rows, columns=headers)
                status += "\n\n" + text(lang, "msg.eval_done", path=str(save_dir))
        return status, jobs.read_console(job), table_update

    timer.tick(on_tick, [current, board.lang], [result, log_box, table])
    source.focus(lambda chosen: gr.update(choices=runs.names(), value=chosen), source, source)
    board.demo.load(lambda: gr.update(choices=runs.names()), None, source)
