"""The Train tab: the form, data preview, command preview, save/load, start/abort/resume, and the
live log and loss curve of the run chosen in the runs list."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_board import jobs
from lf_board.data_preview import check_summary, dataset_names, preview_row
from lf_board.model_info import bundled_models, suggest_template
from lf_board.train_form import (
    DEFAULT_MODEL,
    FIELD_KEYS,
    FIELDS,
    BoardConfigError,
    build_config,
    form_values,
    to_yaml,
    train_command,
    validate,
)
from lf_board.translations import text

if TYPE_CHECKING:
    from lf_board.app import Board

STATUS_KEYS = {"running": "status.running", "finished": "status.finished", "aborted": "status.aborted",
               "failed": "status.failed", "stopped": "status.stopped", "new": "status.new"}
TRAINED_LABEL = "trained"


def message(lang: str, key: str, detail: str = "", error: bool = False) -> str:
    """A message box text: a localised headline, then the details (library messages are English)."""
    import gradio as gr

    headline = text(lang, key)
    if error:
        gr.Warning(f"{headline} {detail}".strip())
    body = f"**{'⚠️ ' if error else ''}{headline}**"
    return body + (f"\n\n```text\n{detail}\n```" if detail else "")


def abort_folder_job(folder: str, lang: str) -> str:
    """Abort the export or evaluation job started from the page (its job folder); the message to show."""
    if folder and jobs.abort(jobs.Job(Path(folder))):
        return message(lang, "msg.aborted", folder)
    return message(lang, "msg.not_running", "", error=True)


def _badam_supported() -> bool:
    from lf_train.args import TrainArguments

    return any(f.name == "use_badam" for f in dataclasses.fields(TrainArguments))


def deepspeed_configs() -> list[str]:
    return sorted(str(p) for p in Path("examples/deepspeed").glob("*.json"))


def run_name_now() -> str:
    return time.strftime("train-%Y%m%d-%H%M%S")


def build(board: Board) -> None:
    import gradio as gr

    from lf_data.templates import TEMPLATES

    L, runs = board.labels, board.runs
    form: dict[str, Any] = {}
    defaults = {f.key: f.default for f in FIELDS}

    def number(key: str, integer: bool = False, **kw: Any) -> Any:
        form[key] = L.make(gr.Number, f"train.{key}", value=defaults[key], precision=0 if integer else None,
                           elem_id=f"train-{key}", **kw)
        return form[key]

    with gr.Row():
        form["model_name_or_path"] = L.make(gr.Dropdown, "train.model_name_or_path", choices=bundled_models(),
                                            value=DEFAULT_MODEL, allow_custom_value=True, scale=3,
                                            elem_id="train-model")
        form["template"] = L.make(gr.Dropdown, "train.template", choices=[("—", "")] + sorted(TEMPLATES),
                                  value=suggest_template(DEFAULT_MODEL) or "", elem_id="train-template")
        form["stage"] = L.make(gr.Dropdown, "train.stage", choices=list(FIELDS[2].choices), value="sft",
                               elem_id="train-stage")
        form["finetuning_type"] = L.make(gr.Dropdown, "train.finetuning_type", choices=list(FIELDS[3].choices),
                                         value="lora", elem_id="train-finetuning-type")
        form["quantization_bit"] = L.make(gr.Dropdown, "train.quantization_bit", choices=list(FIELDS[4].choices),
                                          value="none", elem_id="train-quantization-bit")
    with gr.Row():
        form["dataset_dir"] = L.make(gr.Textbox, "train.dataset_dir", value=board.dataset_dir, scale=1,
                                     elem_id="train-dataset-dir")
        form["dataset"] = L.make(gr.Dropdown, "train.dataset", choices=dataset_names(board.dataset_dir), value=[],
                                 multiselect=True, scale=2, elem_id="train-dataset")
        number("cutoff_len", integer=True)
        number("max_samples", integer=True)
        number("val_size")
    with L.make(gr.Accordion, "train.preview_section", open=True):
        with gr.Row():
            preview_index = L.make(gr.Number, "train.preview_index", value=0, precision=0, minimum=0,
                                   elem_id="train-preview-index")
            preview_button = L.make(gr.Button, "train.preview_row", attr="value", elem_id="train-preview-row")
            check_button = L.make(gr.Button, "train.check_data", attr="value", elem_id="train-check-data")
        preview = L.make(gr.HighlightedText, "train.preview", color_map={TRAINED_LABEL: "green"},
                         show_legend=True, combine_adjacent=True, elem_id="train-preview")
        check = L.make(gr.Textbox, "train.check", lines=8, max_lines=30, elem_id="train-check")
    with L.make(gr.Accordion, "train.hyper_section", open=True), gr.Row():
        number("learning_rate")
        number("num_train_epochs")
        number("max_steps", integer=True)
        number("per_device_train_batch_size", integer=True, minimum=1)
        number("gradient_accumulation_steps", integer=True, minimum=1)
        form["lr_scheduler_type"] = L.make(gr.Dropdown, "train.lr_scheduler_type", choices=list(FIELDS[15].choices),
                                           value="cosine", elem_id="train-lr-scheduler-type")
        number("warmup_ratio")
        number("logging_steps", integer=True, minimum=1)
        number("save_steps", integer=True, minimum=1)
    with L.make(gr.Accordion, "train.lora_section", open=False), gr.Row():
        number("lora_rank", integer=True, minimum=1)
        number("lora_alpha", integer=True, minimum=0)
        number("lora_dropout", minimum=0)
        form["lora_target"] = L.make(gr.Textbox, "train.lora_target", value="all", elem_id="train-lora-target")
        number("loraplus_lr_ratio", minimum=0)
    with L.make(gr.Accordion, "train.extra_section", open=False):
        with gr.Row():
            form["use_galore"] = L.make(gr.Checkbox, "train.use_galore", value=False, elem_id="train-use-galore")
            form["use_badam"] = L.make(gr.Checkbox, "train.use_badam", value=False, visible=_badam_supported(),
                                       elem_id="train-use-badam")
            form["deepspeed"] = L.make(gr.Dropdown, "train.deepspeed", choices=[("—", "")] + deepspeed_configs(),
                                       value="", elem_id="train-deepspeed")
            form["pref_loss"] = L.make(gr.Dropdown, "train.pref_loss", choices=list(FIELDS[27].choices),
                                       value="sigmoid", elem_id="train-pref-loss")
            form["reward_model"] = L.make(gr.Textbox, "train.reward_model", value="", elem_id="train-reward-model")
        extra = L.make(gr.Code, "train.extra_keys", language="yaml", value="", elem_id="train-extra")
    first_output = runs.default_output_dir(DEFAULT_MODEL, "lora", run_name_now())
    with gr.Row():
        form["output_dir"] = L.make(gr.Textbox, "train.output_dir", value=str(first_output), scale=3,
                                    elem_id="train-output-dir")
        config_file = L.make(gr.Dropdown, "train.config_file", choices=board.config_choices(), value=None,
                             allow_custom_value=True, scale=2, elem_id="train-config-file")
        save_button = L.make(gr.Button, "train.save_config", attr="value", elem_id="train-save")
        load_button = L.make(gr.Button, "train.load_config", attr="value", elem_id="train-load")
    with gr.Row():
        command_button = L.make(gr.Button, "train.preview_command", attr="value", elem_id="train-preview-command")
        start_button = L.make(gr.Button, "train.start", attr="value", variant="primary", elem_id="train-start")
    assert set(form) == set(FIELD_KEYS), set(FIELD_KEYS) ^ set(form)
    train_message = gr.Markdown(elem_id="train-message")
    with gr.Row():
        yaml_box = L.make(gr.Code, "train.yaml", language="yaml", interactive=False, elem_id="train-yaml")
        command_box = L.make(gr.Textbox, "train.command", interactive=False, elem_id="train-command")

    with gr.Row():
        run_list = L.make(gr.Dropdown, "train.runs", choices=runs.names(), value=None, scale=3, elem_id="train-runs")
        refresh_button = L.make(gr.Button, "train.refresh", attr="value", elem_id="train-refresh")
        abort_button = L.make(gr.Button, "train.abort", attr="value", variant="stop", elem_id="train-abort")
        resume_button = L.make(gr.Button, "train.resume", attr="value", elem_id="train-resume")
    run_status = gr.Markdown(elem_id="train-status")
    with gr.Row():
        log_box = L.make(gr.Textbox, "train.log", lines=16, max_lines=16, autoscroll=True, interactive=False,
                         elem_id="train-log", scale=3)
        loss_plot = L.make(gr.LinePlot, "train.loss", x="step", y="loss", elem_id="train-loss", scale=2)
    seen = gr.State("")
    timer = gr.Timer(1.5)

    form_inputs = {*form.values(), extra, board.lang}

    def read_form(data: dict) -> tuple[dict[str, Any], str, str]:
        return {key: data[form[key]] for key in FIELD_KEYS}, data[extra], data[board.lang]

    def job_config_path(config: dict[str, Any]) -> str:
        try:
            return str(runs.job(runs.name_of(config.get("output_dir") or "")).config_path)
        except ValueError:
            return "config.yaml"

    # -- model, method, data ---------------------------------------------------------------------
    def on_model(model: str, finetuning_type: str, output_dir: str, lang: str):
        name = Path(output_dir).name if output_dir else run_name_now()
        suggested = suggest_template(model)
        out = str(runs.default_output_dir(model or "model", finetuning_type or "lora", name))
        note = message(lang, "msg.template_suggested", suggested) if suggested else ""
        return (gr.update(value=suggested) if suggested else gr.skip()), out, note

    form["model_name_or_path"].change(on_model, [form["model_name_or_path"], form["finetuning_type"],
                                                 form["output_dir"], board.lang],
                                      [form["template"], form["output_dir"], train_message])
    form["finetuning_type"].change(
        lambda model, ft, out: str(runs.default_output_dir(model or "model", ft or "lora",
                                                           Path(out).name if out else run_name_now())),
        [form["model_name_or_path"], form["finetuning_type"], form["output_dir"]], form["output_dir"])

    def on_dataset_dir(dataset_dir: str, chosen: list[str]):
        names = dataset_names(dataset_dir)
        return gr.update(choices=names, value=[n for n in chosen or [] if n in names])

    form["dataset_dir"].change(on_dataset_dir, [form["dataset_dir"], form["dataset"]], form["dataset"])

    def on_preview(data: dict):
        values, extra_yaml, lang = read_form(data)
        try:
            config = build_config(values, extra_yaml)
            result = preview_row(config, int(data[preview_index] or 0))
        except Exception as err:  # bad input: shown in the page, never a crash
            return gr.skip(), message(lang, "msg.preview_failed", str(err), error=True)
        pieces = [(piece, TRAINED_LABEL if trained else None) for piece, trained in result["pieces"]]
        summary = text(lang, "msg.preview_done", template=result["template"], tokens=result["tokens"],
                       trained=result["trained"], rows=result["rows"])
        return pieces, f"**{summary}**"

    preview_button.click(on_preview, {*form_inputs, preview_index}, [preview, train_message])

    def on_check(data: dict):
        values, extra_yaml, lang = read_form(data)
        try:
            summary = check_summary(build_config(values, extra_yaml))
        except Exception as err:
            return gr.skip(), message(lang, "msg.check_failed", str(err), error=True)
        return summary, message(lang, "msg.check_done")

    check_button.click(on_check, form_inputs, [check, train_message])

    # -- command preview, save and load ------------------------------------------------------------
    def on_command(data: dict):
        values, extra_yaml, lang = read_form(data)
        try:
            config = build_config(values, extra_yaml)
        except BoardConfigError as err:
            return gr.skip(), gr.skip(), message(lang, "msg.invalid_config", str(err), error=True)
        try:
            validate(config, runs)
            note = message(lang, "msg.config_ok")
        except BoardConfigError as err:
            note = message(lang, "msg.invalid_config", str(err), error=True)
        return to_yaml(config), train_command(job_config_path(config)), note

    command_button.click(on_command, form_inputs, [yaml_box, command_box, train_message])

    def on_save(data: dict):
        values, extra_yaml, lang = read_form(data)
        try:
            path = board.config_path(data[config_file] or Path(values["output_dir"]).name)
            config = build_config(values, extra_yaml)
        except (BoardConfigError, ValueError) as err:
            return gr.skip(), message(lang, "msg.save_failed", str(err), error=True)
        from lf_data.config import write_config_atomic

        write_config_atomic(path, config)
        return (gr.update(choices=board.config_choices(), value=board.display_path(path)),
                message(lang, "msg.saved", str(path)))

    save_button.click(on_save, {*form_inputs, config_file}, [config_file, train_message])

    def on_load(chosen: str, lang: str):
        from lf_data.config import read_config

        try:
            config = read_config(board.readable_config(chosen or ""))
            values, rest = form_values(config)
        except Exception as err:
            return [gr.skip()] * (len(FIELD_KEYS) + 1) + [message(lang, "msg.load_failed", str(err), error=True)]
        updates = []
        for key in FIELD_KEYS:
            if key == "dataset":
                names = dataset_names(values["dataset_dir"])
                updates.append(gr.update(choices=sorted(set(names) | set(values[key])), value=values[key]))
            else:
                updates.append(values[key])
        return updates + [rest, message(lang, "msg.loaded", chosen)]

    load_button.click(on_load, [config_file, board.lang], [form[k] for k in FIELD_KEYS] + [extra, train_message])

    # -- start, abort, resume -------------------------------------------------------------------------
    def on_start(data: dict):
        values, extra_yaml, lang = read_form(data)
        try:
            config = build_config(values, extra_yaml)
            validate(config, runs)
        except BoardConfigError as err:
            return gr.skip(), message(lang, "msg.not_started", str(err), error=True), gr.skip(), gr.skip()
        name = runs.name_of(config["output_dir"])
        job = jobs.launch(runs.job(name).folder, "train", config)
        return (gr.update(choices=runs.names(), value=name), message(lang, "msg.started", name),
                to_yaml(config), train_command(job.config_path))

    start_button.click(on_start, form_inputs, [run_list, train_message, yaml_box, command_box])

    def on_abort(name: str, lang: str):
        if not name:
            return message(lang, "msg.no_run_chosen", error=True)
        if jobs.abort(runs.job(name)):
            return message(lang, "msg.aborted", name)
        return message(lang, "msg.not_running", name, error=True)

    abort_button.click(on_abort, [run_list, board.lang], train_message)

    def on_resume(name: str, lang: str):
        from lf_data.config import read_config

        if not name:
            return message(lang, "msg.no_run_chosen", error=True)
        info = runs.info(name)
        source = runs.resume_config(name)
        if not info.resumable or source is None:
            return message(lang, "msg.not_resumable", f"{name}: {text(lang, STATUS_KEYS[info.status])}", error=True)
        config = read_config(source)
        config["output_dir"] = str(info.path)
        try:
            validate(config, runs)
        except BoardConfigError as err:
            return message(lang, "msg.not_started", str(err), error=True)
        jobs.launch(runs.job(name).folder, "train", config)
        return message(lang, "msg.resumed", f"{name} ({info.checkpoints} checkpoint(s))")

    resume_button.click(on_resume, [run_list, board.lang], train_message)
    refresh_button.click(lambda chosen: gr.update(choices=runs.names(), value=chosen), run_list, run_list)

    # -- live log and loss curve ------------------------------------------------------------------------
    def on_tick(name: str, lang: str, last: str):
        """Re-send only what changed: the console log, the loss curve, the status line."""
        if not name:
            return (gr.skip(),) * 4 if last == "" else ("", "", "", _frame([]))
        try:
            info = runs.info(name)
        except ValueError:
            return (gr.skip(),) * 4
        job = runs.job(name)
        now = [name, lang, info.status, str(_size(job.log_path)), str(_size(info.path / "trainer_log.jsonl"))]
        before = last.split("|") if last else [""] * 5
        if now == before:
            return (gr.skip(),) * 4
        from lf_board.runs import loss_points

        points = loss_points(info.path)
        status = text(lang, "msg.run_status", name=name, status=text(lang, STATUS_KEYS[info.status]),
                      step=info.step if info.step is not None else "-", total=info.total_steps or "-",
                      loss=f"{info.loss:.4f}" if info.loss is not None else "-", points=len(points),
                      checkpoints=info.checkpoints)
        same_run = now[0] == before[0]
        log = gr.skip() if same_run and now[3] == before[3] else jobs.read_console(job)
        plot = gr.skip() if same_run and now[4] == before[4] else _frame(points)
        return "|".join(now), f"**{status}**", log, plot

    timer.tick(on_tick, [run_list, board.lang, seen], [seen, run_status, log_box, loss_plot])
    board.demo.load(lambda: (gr.update(choices=runs.names()),
                             str(runs.default_output_dir(DEFAULT_MODEL, "lora", run_name_now()))),
                    None, [run_list, form["output_dir"]])
    board.run_lists.append(run_list)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _frame(points: list[tuple[int, float]]) -> Any:
    import pandas as pd

    return pd.DataFrame({"step": [p[0] for p in points], "loss": [p[1] for p in points]})
