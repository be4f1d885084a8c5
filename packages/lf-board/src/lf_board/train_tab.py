"""The Train tab: the form, data preview, command preview, save/load, start/abort/resume, and the
live log and loss curve of the run chosen in the runs list.

Each section of the page has its own builder; the form's widgets are made from the field list in
train_form (kind, default, choices, element id), so a field is described once, there."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_board import jobs
from lf_board.data_preview import check_summary, dataset_names, preview_row
from lf_board.messages import RUN_STATUS_KEYS, message
from lf_board.model_info import bundled_models, suggest_template
from lf_board.train_form import (
    DEFAULT_MODEL,
    FIELD_KEYS,
    GROUPS,
    BoardConfigError,
    FormField,
    build_config,
    form_values,
    to_yaml,
    train_command,
    validate,
)
from lf_board.translations import text
from lf_train.args import TrainArguments

if TYPE_CHECKING:
    from lf_board.app import Board
    from lf_board.labels import Labels

TRAINED_LABEL = "trained"


def _badam_supported() -> bool:
    return any(f.name == "use_badam" for f in dataclasses.fields(TrainArguments))


def deepspeed_configs() -> list[str]:
    return sorted(str(p) for p in Path("examples/deepspeed").glob("*.json"))


def run_name_now() -> str:
    return time.strftime("train-%Y%m%d-%H%M%S")


# -- the page's parts -------------------------------------------------------------------------------
@dataclasses.dataclass
class Form:
    """The widgets that make up the config, kept by config key so handlers never depend on layout."""

    widgets: dict[str, Any]
    extra: Any
    lang: Any

    def __getitem__(self, key: str) -> Any:
        return self.widgets[key]

    @property
    def inputs(self) -> set[Any]:
        return {*self.widgets.values(), self.extra, self.lang}

    @property
    def in_order(self) -> list[Any]:
        return [self.widgets[key] for key in FIELD_KEYS]

    def read(self, data: dict) -> tuple[dict[str, Any], str, str]:
        """The field values, the extra YAML and the language, from a handler's dict of inputs."""
        return {key: data[self.widgets[key]] for key in FIELD_KEYS}, data[self.extra], data[self.lang]


@dataclasses.dataclass
class Preview:
    index: Any
    row_button: Any
    check_button: Any
    pieces: Any
    check: Any
    media: Any


@dataclasses.dataclass
class ConfigFiles:
    chosen: Any
    save_button: Any
    load_button: Any


@dataclasses.dataclass
class Launch:
    command_button: Any
    start_button: Any
    note: Any
    yaml_box: Any
    command_box: Any
    estimate: Any
    device: Any


@dataclasses.dataclass
class RunView:
    chosen: Any
    refresh_button: Any
    abort_button: Any
    resume_button: Any
    status: Any
    log_box: Any
    loss_plot: Any
    seen: Any
    timer: Any


# -- builders: one per section of the page, in the order the page shows them ---------------------
def _widget(L: Labels, spec: FormField, **overrides: Any) -> Any:
    """A form field's component from its kind, default and choices; overrides carry what only the
    page knows (choices found on disk, layout)."""
    import gradio as gr

    options: dict[str, Any] = {"value": spec.default, "elem_id": spec.elem_id}
    if spec.kind in ("int", "float"):
        cls: type = gr.Number
        options["precision"] = 0 if spec.kind == "int" else None
        if spec.minimum is not None:
            options["minimum"] = spec.minimum
    elif spec.kind == "bool":
        cls = gr.Checkbox
    elif spec.kind in ("choice", "multi", "auto"):
        cls = gr.Dropdown
        options["choices"] = list(spec.choices)
        if spec.kind == "multi":
            options.update(multiselect=True, value=list(spec.default))
    else:
        cls = gr.Textbox
    options.update(overrides)
    cls = options.pop("cls", cls)
    return L.make(cls, f"train.{spec.key}", **options)


def _add_group(L: Labels, widgets: dict[str, Any], group: str, **overrides: dict[str, Any]) -> None:
    for spec in GROUPS[group]:
        widgets[spec.key] = _widget(L, spec, **overrides.get(spec.key, {}))


def _model_row(board: Board, widgets: dict[str, Any]) -> None:
    import gradio as gr

    from lf_data.templates import TEMPLATES

    with gr.Row():
        _add_group(board.labels, widgets, "model",
                   model_name_or_path={"cls": gr.Dropdown, "choices": bundled_models(), "allow_custom_value": True,
                                       "scale": 3},
                   template={"choices": [("—", "")] + sorted(TEMPLATES),
                             "value": suggest_template(DEFAULT_MODEL) or ""})


def _data_row(board: Board, widgets: dict[str, Any]) -> None:
    import gradio as gr

    with gr.Row():
        _add_group(board.labels, widgets, "data", dataset_dir={"value": board.dataset_dir, "scale": 1},
                   dataset={"choices": dataset_names(board.dataset_dir), "scale": 2})


def _preview_section(L: Labels) -> Preview:
    """A row as it will be trained (beside it the row's images and video frames), and `lf data check`'s
    summary: seen before a run is started."""
    import gradio as gr

    with L.make(gr.Accordion, "train.preview_section", open=True):
        with gr.Row():
            index = L.make(gr.Number, "train.preview_index", value=0, precision=0, minimum=0,
                           elem_id="train-preview-index")
            row_button = L.make(gr.Button, "train.preview_row", attr="value", elem_id="train-preview-row")
            check_button = L.make(gr.Button, "train.check_data", attr="value", elem_id="train-check-data")
        with gr.Row():
            pieces = L.make(gr.HighlightedText, "train.preview", color_map={TRAINED_LABEL: "green"},
                            show_legend=True, combine_adjacent=True, elem_id="train-preview", scale=3)
            media = L.make(gr.Gallery, "train.preview_media", columns=2, height=240, object_fit="contain",
                           visible=False, interactive=False, elem_id="train-preview-media", scale=1)
        check = L.make(gr.Textbox, "train.check", lines=8, max_lines=30, elem_id="train-check")
    return Preview(index, row_button, check_button, pieces, check, media)


def _hyper_section(L: Labels, widgets: dict[str, Any]) -> None:
    import gradio as gr

    with L.make(gr.Accordion, "train.hyper_section", open=True), gr.Row():
        _add_group(L, widgets, "hyper")


def _lora_section(L: Labels, widgets: dict[str, Any]) -> None:
    import gradio as gr

    with L.make(gr.Accordion, "train.lora_section", open=False), gr.Row():
        _add_group(L, widgets, "lora")


def _extra_section(L: Labels, widgets: dict[str, Any]) -> Any:
    """Less used methods and stage options, and free YAML for any key the form lacks; the YAML box."""
    import gradio as gr

    with L.make(gr.Accordion, "train.extra_section", open=False):
        with gr.Row():
            _add_group(L, widgets, "extra", use_badam={"visible": _badam_supported()},
                       deepspeed={"choices": [("—", "")] + deepspeed_configs()},
                       reward_funcs={"allow_custom_value": True})  # or a module:function of your own
        return L.make(gr.Code, "train.extra_keys", language="yaml", value="", elem_id="train-extra")


def _output_row(board: Board, widgets: dict[str, Any]) -> ConfigFiles:
    """Where the run is written, and the config files the form is saved to and loaded from."""
    import gradio as gr

    L = board.labels
    first_output = board.runs.default_output_dir(DEFAULT_MODEL, "lora", run_name_now())
    with gr.Row():
        _add_group(L, widgets, "output", output_dir={"value": str(first_output), "scale": 3})
        chosen = L.make(gr.Dropdown, "train.config_file", choices=board.config_choices(), value=None,
                        allow_custom_value=True, scale=2, elem_id="train-config-file")
        save_button = L.make(gr.Button, "train.save_config", attr="value", elem_id="train-save")
        load_button = L.make(gr.Button, "train.load_config", attr="value", elem_id="train-load")
    return ConfigFiles(chosen, save_button, load_button)


def _launch_section(L: Labels) -> Launch:
    """The buttons that check or start the form's run with the run's estimate beside them (and the device
    it is for), the tab's message box, the YAML and command."""
    import gradio as gr

    from lf_board.estimate_view import THIS_MACHINE, device_choices

    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            estimate = gr.Markdown(text(L.lang, "msg.estimate_pending"), elem_id="train-estimate")
        with gr.Column(scale=1, min_width=240):
            device = L.make(gr.Dropdown, "train.estimate_device", choices=device_choices(), value=THIS_MACHINE,
                            elem_id="train-estimate-device")
            command_button = L.make(gr.Button, "train.preview_command", attr="value",
                                    elem_id="train-preview-command")
            start_button = L.make(gr.Button, "train.start", attr="value", variant="primary", elem_id="train-start")
    note = gr.Markdown(elem_id="train-message")
    with gr.Row():
        yaml_box = L.make(gr.Code, "train.yaml", language="yaml", interactive=False, elem_id="train-yaml")
        command_box = L.make(gr.Textbox, "train.command", interactive=False, elem_id="train-command")
    return Launch(command_button, start_button, note, yaml_box, command_box, estimate, device)


def _run_view(board: Board) -> RunView:
    """The runs list with its controls, and the chosen run's status, console log and loss curve."""
    import gradio as gr

    L = board.labels
    with gr.Row():
        chosen = L.make(gr.Dropdown, "train.runs", choices=board.runs.names(), value=None, scale=3,
                        elem_id="train-runs")
        refresh_button = L.make(gr.Button, "train.refresh", attr="value", elem_id="train-refresh")
        abort_button = L.make(gr.Button, "train.abort", attr="value", variant="stop", elem_id="train-abort")
        resume_button = L.make(gr.Button, "train.resume", attr="value", elem_id="train-resume")
    status = gr.Markdown(elem_id="train-status")
    with gr.Row():
        log_box = L.make(gr.Textbox, "train.log", lines=16, max_lines=16, autoscroll=True, interactive=False,
                         elem_id="train-log", scale=3)
        loss_plot = L.make(gr.LinePlot, "train.loss", x="step", y="value", color="curve", elem_id="train-loss",
                           scale=2)
    return RunView(chosen, refresh_button, abort_button, resume_button, status, log_box, loss_plot,
                   seen=gr.State(""), timer=gr.Timer(1.5))


def build(board: Board) -> None:
    """Lay out the tab section by section, then connect each section's events."""
    L = board.labels
    widgets: dict[str, Any] = {}
    _model_row(board, widgets)
    _data_row(board, widgets)
    preview = _preview_section(L)
    _hyper_section(L, widgets)
    _lora_section(L, widgets)
    extra = _extra_section(L, widgets)
    files = _output_row(board, widgets)
    launch = _launch_section(L)
    assert set(widgets) == set(FIELD_KEYS), set(FIELD_KEYS) ^ set(widgets)
    view = _run_view(board)

    form = Form(widgets, extra, board.lang)
    _on_model_and_data(board, form)
    _on_preview(form, preview, launch.note)
    _on_command_and_files(board, form, files, launch)
    _on_start(board, form, launch, view)
    _on_estimate(board, form, launch)
    _on_run_controls(board, view, launch.note)
    _on_live(board, form, view)


# -- events -------------------------------------------------------------------------------------------
def _on_model_and_data(board: Board, form: Form) -> None:
    """A new model suggests its template; model and method name the output folder; a new data folder
    lists its datasets."""
    import gradio as gr

    runs = board.runs

    def on_model(model: str, finetuning_type: str, output_dir: str):
        # the suggestion shows in the template field itself, never in the tab's message box: a late answer
        # to a model choice must not write over the message of a later click (a preview, a check)
        name = Path(output_dir).name if output_dir else run_name_now()
        out = str(runs.default_output_dir(model or "model", finetuning_type or "lora", name))
        return suggest_template(model) or "", out

    form["model_name_or_path"].change(on_model, [form["model_name_or_path"], form["finetuning_type"],
                                                 form["output_dir"]],
                                      [form["template"], form["output_dir"]])
    form["finetuning_type"].change(
        lambda model, ft, out: str(runs.default_output_dir(model or "model", ft or "lora",
                                                           Path(out).name if out else run_name_now())),
        [form["model_name_or_path"], form["finetuning_type"], form["output_dir"]], form["output_dir"])

    def on_dataset_dir(dataset_dir: str, chosen: list[str]):
        names = dataset_names(dataset_dir)
        return gr.update(choices=names, value=[n for n in chosen or [] if n in names])

    form["dataset_dir"].change(on_dataset_dir, [form["dataset_dir"], form["dataset"]], form["dataset"])


def _on_preview(form: Form, preview: Preview, note: Any) -> None:
    import gradio as gr

    def on_preview(data: dict):
        values, extra_yaml, lang = form.read(data)
        try:
            config = build_config(values, extra_yaml)
            result = preview_row(config, int(data[preview.index] or 0))
        except Exception as err:  # bad input: shown in the page, never a crash
            return gr.skip(), gr.skip(), message(lang, "msg.preview_failed", str(err), error=True)
        pieces = [(piece, TRAINED_LABEL if trained else None) for piece, trained in result["pieces"]]
        summary = text(lang, "msg.preview_done", template=result["template"], tokens=result["tokens"],
                       trained=result["trained"], rows=result["rows"])
        if result["sounds"]:
            summary += " " + text(lang, "msg.preview_sounds", names=", ".join(result["sounds"]))
        media = gr.update(value=result["media"], visible=bool(result["media"]))
        return pieces, media, f"**{summary}**"

    preview.row_button.click(on_preview, {*form.inputs, preview.index}, [preview.pieces, preview.media, note])

    def on_check(data: dict):
        values, extra_yaml, lang = form.read(data)
        try:
            summary = check_summary(build_config(values, extra_yaml))
        except Exception as err:
            return gr.skip(), message(lang, "msg.check_failed", str(err), error=True)
        return summary, message(lang, "msg.check_done")

    preview.check_button.click(on_check, form.inputs, [preview.check, note])


def _on_command_and_files(board: Board, form: Form, files: ConfigFiles, launch: Launch) -> None:
    """Command preview, and saving the form to a config file or loading one into it."""
    import gradio as gr

    runs = board.runs

    def job_config_path(config: dict[str, Any]) -> str:
        try:
            return str(runs.job(runs.name_of(config.get("output_dir") or "")).config_path)
        except ValueError:
            return "config.yaml"

    def on_command(data: dict):
        values, extra_yaml, lang = form.read(data)
        try:
            config = build_config(values, extra_yaml)
        except BoardConfigError as err:
            return gr.skip(), gr.skip(), message(lang, "msg.invalid_config", str(err), error=True)
        try:
            validate(config, runs)
            shown = message(lang, "msg.config_ok")
        except BoardConfigError as err:
            shown = message(lang, "msg.invalid_config", str(err), error=True)
        return to_yaml(config), train_command(job_config_path(config)), shown

    launch.command_button.click(on_command, form.inputs, [launch.yaml_box, launch.command_box, launch.note])

    def on_save(data: dict):
        values, extra_yaml, lang = form.read(data)
        try:
            path = board.config_path(data[files.chosen] or Path(values["output_dir"]).name)
            config = build_config(values, extra_yaml)
        except (BoardConfigError, ValueError) as err:
            return gr.skip(), message(lang, "msg.save_failed", str(err), error=True)
        from lf_data.atomic_files import write_yaml_atomic

        write_yaml_atomic(path, config)
        return (gr.update(choices=board.config_choices(), value=board.display_path(path)),
                message(lang, "msg.saved", str(path)))

    files.save_button.click(on_save, {*form.inputs, files.chosen}, [files.chosen, launch.note])

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

    files.load_button.click(on_load, [files.chosen, board.lang], form.in_order + [form.extra, launch.note])


def _on_start(board: Board, form: Form, launch: Launch, view: RunView) -> None:
    import gradio as gr

    runs = board.runs

    def on_start(data: dict):
        values, extra_yaml, lang = form.read(data)
        try:
            config = build_config(values, extra_yaml)
            validate(config, runs)
        except BoardConfigError as err:
            return gr.skip(), message(lang, "msg.not_started", str(err), error=True), gr.skip(), gr.skip()
        name = runs.name_of(config["output_dir"])
        job = jobs.launch(runs.job(name).folder, "train", config)
        return (gr.update(choices=runs.names(), value=name), message(lang, "msg.started", name),
                to_yaml(config), train_command(job.config_path))

    launch.start_button.click(on_start, form.inputs, [view.chosen, launch.note, launch.yaml_box, launch.command_box])


def _on_estimate(board: Board, form: Form, launch: Launch) -> None:
    """Every change of the form (language included) or of the device re-estimates the run Start would
    launch; a change made while one is computed queues only the latest (a fraction of a second each once
    the model's config has been read)."""
    import gradio as gr

    from lf_board.estimate_view import form_estimate

    def on_estimate(data: dict):
        values, extra_yaml, lang = form.read(data)
        return form_estimate(values, extra_yaml, data[launch.device], lang, board.runs)

    triggers = [component.change for component in form.inputs] + [launch.device.change, board.demo.load]
    gr.on(triggers, on_estimate, {*form.inputs, launch.device}, launch.estimate, trigger_mode="always_last",
          show_progress="hidden")


def _on_run_controls(board: Board, view: RunView, note: Any) -> None:
    """Abort, resume and refresh act on the run chosen in the list, whoever started it."""
    import gradio as gr

    runs = board.runs

    def on_abort(name: str, lang: str):
        if not name:
            return message(lang, "msg.no_run_chosen", error=True)
        if jobs.abort(runs.job(name)):
            return message(lang, "msg.aborted", name)
        return message(lang, "msg.not_running", name, error=True)

    view.abort_button.click(on_abort, [view.chosen, board.lang], note)

    def on_resume(name: str, lang: str):
        from lf_data.config import read_config

        if not name:
            return message(lang, "msg.no_run_chosen", error=True)
        info = runs.info(name)
        source = runs.resume_config(name)
        if not info.resumable or source is None:
            return message(lang, "msg.not_resumable", f"{name}: {text(lang, RUN_STATUS_KEYS[info.status])}",
                           error=True)
        config = read_config(source)
        config["output_dir"] = str(info.path)
        try:
            validate(config, runs)
        except BoardConfigError as err:
            return message(lang, "msg.not_started", str(err), error=True)
        jobs.launch(runs.job(name).folder, "train", config)
        return message(lang, "msg.resumed", f"{name} ({info.checkpoints} checkpoint(s))")

    view.resume_button.click(on_resume, [view.chosen, board.lang], note)
    view.refresh_button.click(lambda chosen: gr.update(choices=runs.names(), value=chosen), view.chosen,
                              view.chosen)


def _on_live(board: Board, form: Form, view: RunView) -> None:
    """The chosen run's log, loss curve and status, polled from disk; a fresh output folder per page load."""
    import gradio as gr

    runs = board.runs

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
        from lf_board.runs import curve_points, loss_points

        points = loss_points(info.path)
        status = text(lang, "msg.run_status", name=name, status=text(lang, RUN_STATUS_KEYS[info.status]),
                      step=info.step if info.step is not None else "-", total=info.total_steps or "-",
                      loss=f"{info.loss:.4f}" if info.loss is not None else "-", points=len(points),
                      checkpoints=info.checkpoints) + _preference_summary(info.path)
        same_run = now[0] == before[0]
        log = gr.skip() if same_run and now[3] == before[3] else jobs.read_console(job)
        plot = gr.skip() if same_run and now[4] == before[4] else _frame(curve_points(info.path))
        return "|".join(now), f"**{status}**", log, plot

    view.timer.tick(on_tick, [view.chosen, board.lang, view.seen], [view.seen, view.status, view.log_box,
                                                                    view.loss_plot])
    board.demo.load(lambda: (gr.update(choices=runs.names()),
                             str(runs.default_output_dir(DEFAULT_MODEL, "lora", run_name_now()))),
                    None, [view.chosen, form["output_dir"]])
    board.run_lists.append(view.chosen)


def _preference_summary(run_dir: Path) -> str:
    """The latest reward accuracy and margin of a dpo/kto run: what preference training is judged by."""
    from lf_data.run_folder import read_log

    last = next((r for r in reversed(read_log(run_dir)) if "rewards/margins" in r), None)
    if last is None:
        return ""
    return "".join(f" · {key} {last[key]:.3f}" for key in ("rewards/accuracies", "rewards/margins") if key in last)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _frame(points: list[tuple[int, str, float]]) -> Any:
    """The run's curves in long form: one line per curve (loss; reward and kl for grpo)."""
    import pandas as pd

    return pd.DataFrame({"step": [p[0] for p in points], "curve": [p[1] for p in points],
                         "value": [p[2] for p in points]})
