"""The board's logic without a browser: locales, the form <-> config round trip, validation of bad
input, runs read back from disk, jobs started and aborted, previews, export/eval/chat configs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lf_board import jobs
from lf_board.runs import RunsRoot, curve_points, loss_points, slug
from lf_board.train_form import BoardConfigError, build_config, form_values, validate
from lf_board.translations import LANGUAGES, locale, text

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "packages" / "lf-board" / "src" / "lf_board"
KEY_LITERAL = re.compile(r"""["']((?:app|tab|train|export|chat|eval|msg|status|webchat)\.[a-z_0-9.]+)["']""")


# -- locales ---------------------------------------------------------------------------------------
def test_every_language_has_the_same_keys_and_placeholders():
    english = locale("en")
    assert len(english) > 150
    for lang in LANGUAGES:
        table = locale(lang)
        assert set(table) == set(english), (lang, set(table) ^ set(english))
        for key, value in table.items():
            assert value.strip(), (lang, key)
            assert set(re.findall(r"{(\w+)}", value)) == set(re.findall(r"{(\w+)}", english[key])), (lang, key)
    assert locale("ru")["tab.train"] == "Обучение" and locale("zh")["tab.train"] == "训练"


def test_every_key_the_code_uses_exists():
    used = set()
    for path in SRC.glob("*.py"):
        used |= set(KEY_LITERAL.findall(path.read_text(encoding="utf-8")))
    from lf_board import create_app

    demo = create_app(runs_root="/nonexistent-runs-root")
    labelled = demo.board.labels.keys()
    assert {"train.learning_rate", "train.learning_rate.info", "tab.chat", "chat.input.placeholder"} <= labelled
    missing = sorted((used | labelled) - set(locale("en")))
    assert not missing, missing
    # and every key of the files is used somewhere (no dead translations)
    assert not sorted(set(locale("en")) - used - labelled)


def test_language_switch_relabels_every_component():
    from lf_board import create_app

    demo = create_app(runs_root="/nonexistent-runs-root")
    labels = demo.board.labels
    russian = labels.updates("ru")
    assert len(russian) == len(labels.components) > 90
    by_key = {keys.get("label", keys.get("value")): update for (_, keys), update in zip(labels.entries, russian,
                                                                                       strict=True)}
    assert by_key["tab.export"]["label"] == "Экспорт"
    assert by_key["train.start"]["value"] == "Запустить"
    assert by_key["train.cutoff_len"]["info"] == locale("ru")["train.cutoff_len.info"]
    assert text("zh", "msg.run_status", name="r", status="s", step=1, total=4, loss="2.0", points=1,
                checkpoints=0).startswith("r：s")


# -- the form and its config --------------------------------------------------------------------------
def form(**changes):
    """The form as the page first shows it (the board's suggested defaults), with changes."""
    from lf_board.train_form import FIELDS

    values = {f.key: f.default for f in FIELDS}
    values.update(dataset=["identity"], output_dir="/tmp/runs/m/lora/a")
    values.update(changes)
    return values


def test_form_builds_the_flat_config_lf_train_reads():
    config = build_config(form(max_samples=16, quantization_bit="4", max_steps=0, loraplus_lr_ratio=0),
                          "seed: 7\nbf16: false\n")
    assert config["model_name_or_path"] == "smollm2-135m-instruct"
    assert config["dataset"] == ["identity"] and config["max_samples"] == 16 and config["quantization_bit"] == 4
    assert config["lora_rank"] == 8 and config["lora_target"] == "all" and config["learning_rate"] == 1e-4
    for unset in ("max_steps", "loraplus_lr_ratio", "val_size", "use_galore", "deepspeed", "template", "pref_loss",
                  "gradient_checkpointing"):  # checkpointing is lf train's default: the YAML leaves it out
        assert unset not in config
    assert config["seed"] == 7 and config["bf16"] is False
    assert build_config(form(gradient_checkpointing=False))["gradient_checkpointing"] is False
    full = build_config(form(finetuning_type="full", stage="dpo"))
    assert "lora_rank" not in full and full["pref_loss"] == "sigmoid"
    grpo_keys = ("reward_funcs", "num_generations", "max_completion_length", "beta", "loss_type")
    assert not any(key in full or key in config for key in grpo_keys)
    grpo = build_config(form(stage="grpo", reward_funcs=["accuracy", "my_rewards:score"], num_generations=4))
    assert [grpo[key] for key in grpo_keys] == [["accuracy", "my_rewards:score"], 4, 256, 0.0, "dapo"]
    with pytest.raises(BoardConfigError, match="key: value"):
        build_config(form(), "- a list")


def test_machine_dependent_switches_leave_the_choice_to_lf_train_unless_set():
    """bf16, fp16, padding_free and fused_lm_head default by machine and model: `auto` writes no key,
    true/false write the bool (only for the stages that read it), and a loaded config shows its own."""
    auto = build_config(form())
    assert not {"bf16", "fp16", "flash_attn", "padding_free", "fused_lm_head", "use_liger_kernel"} & set(auto)
    chosen = build_config(form(bf16="false", fp16="true", flash_attn="sdpa", padding_free="false",
                               fused_lm_head="true", use_liger_kernel=True))
    assert (chosen["bf16"], chosen["fp16"], chosen["flash_attn"], chosen["padding_free"], chosen["fused_lm_head"],
            chosen["use_liger_kernel"]) == (False, True, "sdpa", False, True, True)
    dpo = build_config(form(stage="dpo", padding_free="false", fused_lm_head="false"))
    assert dpo["padding_free"] is False and "fused_lm_head" not in dpo  # dpo's loss is TRL's choice
    assert "padding_free" not in build_config(form(stage="rm", padding_free="false"))
    values, rest = form_values({"stage": "pt", "bf16": False, "padding_free": True, "fused_lm_head": False})
    assert (values["bf16"], values["fp16"], values["padding_free"], values["fused_lm_head"]) == ("false", "auto", "true", "false")
    rebuilt = build_config(values, rest)
    assert (rebuilt["bf16"], rebuilt["padding_free"], rebuilt["fused_lm_head"]) == (False, True, False)
    assert "fp16" not in rebuilt


def test_choice_fields_offer_exactly_what_the_config_types_allow():
    """The board's choices are the Literals `lf train` checks, read from the config dataclasses (never
    a copy that drifts when a stage or loss is added), both in the field list and in the page."""
    from typing import get_args, get_type_hints

    from lf_board import create_app
    from lf_board.train_form import FIELDS, field, literal_choices
    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_train.args import TrainArguments

    expected = {"stage": get_args(get_type_hints(TrainArguments)["stage"]),
                "pref_loss": get_args(get_type_hints(TrainArguments)["pref_loss"]),
                "finetuning_type": get_args(get_type_hints(FinetuningArguments)["finetuning_type"]),
                "flash_attn": get_args(get_type_hints(ModelArguments)["flash_attn"])}
    demo = create_app(runs_root="/nonexistent-runs-root")
    shown = {keys["label"]: component for component, keys in demo.board.labels.entries if "label" in keys}
    for key, choices in expected.items():
        assert choices and field(key).choices == choices, key
        assert [value for _, value in shown[f"train.{key}"].choices] == list(choices), key
        assert field(key).default in choices, key
    with pytest.raises(TypeError, match="not a Literal"):
        literal_choices(ModelArguments, "quantization_bit")
    assert len({f.elem_id for f in FIELDS}) == len(FIELDS)  # the page finds each widget by its id


@pytest.mark.parametrize("recipe", ["quickstart.yaml", "train/sft_lora.yaml", "train/dpo_lora.yaml",
                                    "train/sft_loraplus.yaml", "train/sft_full.yaml"])
def test_save_and_load_round_trip_every_recipe(recipe):
    """Loading a recipe into the form and saving it gives the same run: every key kept, and keys the
    form adds carry the value lf train would use anyway."""
    from lf_board.train_form import FIELDS

    config = yaml.safe_load((REPO / "examples" / recipe).read_text())
    rebuilt = build_config(*form_values(config))
    expected = dict(config)
    if isinstance(expected.get("dataset"), str):
        expected["dataset"] = expected["dataset"].split(",")
    if isinstance(expected.get("lora_target"), list):
        expected["lora_target"] = ",".join(expected["lora_target"])
    library = {f.key: f.absent for f in FIELDS}
    assert {k: rebuilt[k] for k in expected if k in rebuilt} == {k: v for k, v in expected.items() if k in rebuilt}
    for key in set(expected) - set(rebuilt):  # left out only where it is the library's own default
        assert expected[key] in (library.get(key), 0, 0.0, False), key
    for key in set(rebuilt) - set(expected):
        assert rebuilt[key] == library[key], key
    assert build_config(*form_values(yaml.safe_load(yaml.safe_dump(rebuilt)))) == rebuilt


# -- validation: bad input is a message, never a started run -------------------------------------------
@pytest.fixture
def runs(tmp_path) -> RunsRoot:
    return RunsRoot(tmp_path / "saves")


def good(runs, model: str, data_dir: Path, **changes) -> dict:
    values = form(model_name_or_path=model, dataset_dir=str(data_dir), template="chatml",
                  output_dir=str(runs.root / "tiny" / "lora" / "run1"))
    values.update(changes)
    return build_config(values)


def test_a_good_config_passes(runs, tiny_llama, data_dir):
    validate(good(runs, str(tiny_llama), data_dir), runs)


@pytest.mark.parametrize(("changes", "needle"), [
    ({"dataset": []}, "no `dataset` given"),
    ({"quantization_bit": "4", "finetuning_type": "full"}, "a quantised model trains only through adapters"),
    ({"model_name_or_path": "/nonexistent/model-folder"}, "does not exist"),
    ({"model_name_or_path": "/nonexistent/model.gguf"}, "does not exist"),
    ({"use_galore": True}, "use_galore projects the gradients of full weights"),
    ({"dataset": ["identiti"]}, "Did you mean 'identity'"),
    ({"template": "chatmll"}, "Did you mean 'chatml'"),
    ({"stage": "ppo", "max_steps": 4}, "reward_model"),
    ({"output_dir": "/elsewhere/run"}, "outside the runs root"),
    ({"model_name_or_path": ""}, "no model chosen"),
])
def test_bad_input_is_a_clear_message(runs, tiny_llama, data_dir, changes, needle):
    config = good(runs, str(tiny_llama), data_dir, **changes)
    with pytest.raises(BoardConfigError, match=re.escape(needle)):
        validate(config, runs)
    assert not runs.root.exists()  # nothing was written, nothing started


@pytest.mark.parametrize("extra", ["tokenized_path: /etc/lf-cache", "tokenized_path: ../../elsewhere",
                                   "cache_dir: /root/.cache/elsewhere"])
def test_more_config_keys_cannot_write_outside_the_runs_root(runs, tiny_llama, data_dir, extra):
    values = form(model_name_or_path=str(tiny_llama), dataset_dir=str(data_dir), template="chatml",
                  output_dir=str(runs.root / "tiny" / "lora" / "run1"))
    key, value = (part.strip() for part in extra.split(":"))
    with pytest.raises(BoardConfigError, match=re.escape(f"{key} {value!r} is outside the runs root")):
        validate(build_config(values, extra), runs)
    inside = build_config(values, f"{key}: {runs.root / 'tiny' / 'cache'}")
    validate(inside, runs)  # the same key under the runs root is fine


def test_a_finished_run_is_not_started_again(runs, tiny_llama, data_dir):
    config = good(runs, str(tiny_llama), data_dir)
    out = Path(config["output_dir"])
    out.mkdir(parents=True)
    (out / "train_results.json").write_text("{}")
    with pytest.raises(BoardConfigError, match="already holds a finished run"):
        validate(config, runs)


# -- the estimate beside Start --------------------------------------------------------------------------------
def tiny_form(runs, tiny_llama, data_dir, **changes) -> dict:
    return form(model_name_or_path=str(tiny_llama), dataset_dir=str(data_dir), template="chatml",
                output_dir=str(runs.root / "tiny" / "lora" / "run1"), max_steps=10, **changes)


def test_estimate_block_shows_the_estimators_numbers(runs, tiny_llama, data_dir):
    """The block words lf_train.estimate's figures for the config Start would launch (the tiny Llama, LoRA
    r8 on every linear layer: 8,192 trainable parameters, AdamW 2 x 4 bytes each)."""
    from lf_board.estimate_view import device_choices, form_estimate
    from lf_train.estimate import estimate, known_devices

    values = tiny_form(runs, tiny_llama, data_dir)
    shown = form_estimate(values, "", "H100 80GB", "en", runs)
    config = build_config(values)
    result = estimate({**config, "output_dir": str(runs.root / "tiny" / "lora" / "run1")}, device="H100 80GB")
    assert result.trainable_params == 2 * 8 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 3 * (32 + 64)) == 8192
    assert result.optimizer == 2 * 8192 * 4
    f = result.figures()
    assert shown.startswith("**Estimate** · sft LoRA r8 · H100 80GB · bf16 mixed precision\n")
    for line in (f"- Parameters: 8.19K trained of {f['total']} ({f['percent']})",
                 f"- Peak memory per device: {f['peak']} of 79.6 GiB",
                 f"  - weights {f['weights']} · gradients {f['gradients']} · optimizer state 0.0001 GiB · "
                 f"activations {f['activations']} · logits and loss {f['logits']} · framework 0.60 GiB",
                 f"- ~{f['tokens_per_second']} tokens/s; the whole run: {f['duration']} for 10 steps"):
        assert line in shown.splitlines(), (line, shown)
    assert "⚠️" not in shown
    russian = form_estimate(values, "", "H100 80GB", "ru", runs)
    assert f"Пиковая память на устройство: {f['peak']} из 79.6 GiB" in russian
    assert [value for _, value in device_choices()] == ["", *known_devices()]


def test_estimate_follows_batch_size_method_and_extra_keys(runs, tiny_llama, data_dir):
    """Each part of the block moves with the form: activations with the batch and with gradient
    checkpointing (a key typed in the extra YAML), the trained share and its state with the method."""
    from lf_board.estimate_view import form_estimate
    from lf_train.estimate import estimate

    def shown(extra: str = "", **changes) -> str:
        return form_estimate(tiny_form(runs, tiny_llama, data_dir, **changes), extra, "T4", "en", runs)

    def part(block: str, name: str) -> float:
        return float(re.search(rf"{name} ([\d.]+) GiB", block).group(1))

    lora, bigger = shown(), shown(per_device_train_batch_size=8)
    assert part(bigger, "activations") == pytest.approx(4 * part(lora, "activations"), abs=2e-4)  # 4 digits shown
    assert part(bigger, "gradients") == part(lora, "gradients")
    kept = shown("gradient_checkpointing: false", per_device_train_batch_size=8)  # checkpointing is the default
    assert part(bigger, "activations") < part(kept, "activations")
    full = shown(finetuning_type="full")
    with_lora = estimate(build_config(tiny_form(runs, tiny_llama, data_dir)), device="T4")
    base = estimate(build_config(tiny_form(runs, tiny_llama, data_dir, finetuning_type="full")), device="T4")
    assert base.total_params == base.trainable_params == with_lora.total_params - 8192  # the adapter is gone
    total = base.figures()["total"]
    assert "· sft full · T4 · fp16 mixed precision" in full
    assert f"Parameters: {total} trained of {total} (100.00%)" in full
    assert part(full, "optimizer state") > part(lora, "optimizer state")
    assert part(full, "Peak memory per device:") >= part(lora, "Peak memory per device:")


def test_estimate_that_does_not_fit_names_the_keys_that_would(runs, tiny_llama, data_dir, monkeypatch):
    import lf_train.estimate as module
    from lf_board.estimate_view import form_estimate

    small = module.Device("small GPU", 0.1, 100.0, overhead_gib=0.0)
    monkeypatch.setattr(module, "find_device", lambda name: small)
    shown = form_estimate(tiny_form(runs, tiny_llama, data_dir, finetuning_type="full", per_device_train_batch_size=64,
                                    cutoff_len=256), "fused_lm_head: false", "", "en", runs)  # the whole logits
    warning = shown.splitlines()[-1]
    assert warning.startswith("**⚠️ Does not fit in the 0.1 GiB of small GPU. It would fit with: `"), shown
    assert "`per_device_train_batch_size=1 gradient_accumulation_steps=512 (" in warning


@pytest.mark.parametrize(("change", "needle"), [
    ({"model_name_or_path": "no-config"}, "has no config.json"),
    ({"extra": "lora_rnak: 4"}, "Did you mean 'lora_rank'"),
    ({"extra": "a: [1"}, "extra keys are not valid YAML"),
    ({"output_dir": "/elsewhere/run"}, "is outside the runs root"),
    ({"device": "TPU v5"}, "Known devices: cpu, H100 80GB"),
])
def test_estimate_errors_are_one_line(runs, tiny_llama, data_dir, tmp_path, change, needle):
    from lf_board.estimate_view import form_estimate

    if change.get("model_name_or_path") == "no-config":
        (tmp_path / "no-config").mkdir()
        change = {"model_name_or_path": str(tmp_path / "no-config")}
    extra, device = change.pop("extra", ""), change.pop("device", "T4")
    values = tiny_form(runs, tiny_llama, data_dir)
    values.update(change)
    shown = form_estimate(values, extra, device, "en", runs)
    assert shown.startswith("**No estimate:** ") and needle in shown, shown
    assert "\n" not in shown and "Traceback" not in shown
    assert not runs.root.exists()  # estimating writes nothing


# -- runs on disk ------------------------------------------------------------------------------------------
def write_run(root: Path, name: str, steps: int, finished: bool = False, checkpoints: tuple = ()) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "lf_config.yaml").write_text(yaml.safe_dump({"model_name_or_path": "smollm2-135m-instruct",
                                                        "template": "smollm2", "output_dir": str(run)}))
    lines = [json.dumps({"step": s, "total_steps": steps, "loss": 3.0 - 0.5 * s}) for s in range(1, steps + 1)]
    (run / "trainer_log.jsonl").write_text("\n".join(lines) + '\n{"step": 9, "lo')  # a line being written
    for step in checkpoints:
        (run / f"checkpoint-{step}").mkdir()
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    if finished:
        (run / "train_results.json").write_text("{}")
        (run / "adapter_config.json").write_text("{}")
    return run


def test_runs_are_read_from_disk_and_survive_a_restart(runs):
    write_run(runs.root, "m/lora/old", 4, finished=True, checkpoints=(2, 4))
    time.sleep(0.02)
    write_run(runs.root, "m/lora/stopped", 3, checkpoints=(2,))
    (runs.root / "notes").mkdir(parents=True)
    assert runs.names() == ["m/lora/stopped", "m/lora/old"]
    restarted = RunsRoot(runs.root)  # a new board process: same answers, nothing kept in memory
    old, stopped = restarted.info("m/lora/old"), restarted.info("m/lora/stopped")
    assert (old.status, old.step, old.total_steps, old.loss, old.checkpoints, old.adapter) == \
        ("finished", 4, 4, 1.0, 2, True)
    assert (stopped.status, stopped.resumable, stopped.loss, stopped.checkpoints) == ("stopped", True, 1.5, 1)
    assert not old.resumable
    assert loss_points(stopped.path) == [(1, 2.5), (2, 2.0), (3, 1.5)]
    assert curve_points(stopped.path) == [(1, "loss", 2.5), (2, "loss", 2.0), (3, "loss", 1.5)]
    assert restarted.resume_config("m/lora/stopped") == stopped.path / "lf_config.yaml"
    with pytest.raises(ValueError):
        restarted.info("../outside")
    with pytest.raises(ValueError):
        restarted.inside(".board/runs/x")


def test_output_dir_names():
    assert slug("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB--SmolLM2-135M"
    assert slug("/models/llama.Q4.gguf") == "llama.Q4"
    assert slug("./my model/") == "my_model"
    assert RunsRoot("/r").default_output_dir("org/m", "lora", "x y") == Path("/r/org--m/lora/x_y")


# -- jobs: subprocesses the board starts and stops ------------------------------------------------------------
def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_job_runs_lf_in_a_subprocess_and_records_its_end(tmp_path, tiny_llama, data_dir):
    config = {"model_name_or_path": str(tiny_llama), "template": "chatml", "dataset": "identity",
              "dataset_dir": str(data_dir)}
    job = jobs.launch(tmp_path / "job", "data check", config)
    wait_for(lambda: job.state() == "done", timeout=300)
    assert yaml.safe_load(job.config_path.read_text()) == config
    console = jobs.read_console(job)
    assert console.startswith(f"$ lf data check {job.config_path}")
    assert "rows read     8" in console and "kept          8" in console
    failing = jobs.launch(tmp_path / "bad", "train", {"lora_rnak": 4})
    wait_for(lambda: failing.state() == "failed")
    assert "Did you mean 'lora_rank'" in jobs.read_console(failing)


def test_a_job_leaves_the_tokenizer_threads_to_the_run_unless_the_user_chose(tmp_path, monkeypatch):
    from lf_data import tokenizer_threads

    envs = []

    class Started:
        pid = 12345

        def __init__(self, *args, env, **kwargs):
            envs.append(env)

        def wait(self):
            return 0

    monkeypatch.setattr(jobs.subprocess, "Popen", Started)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setattr(tokenizer_threads, "_set_by_lf", False)  # the user's: passed on
    jobs.launch(tmp_path / "a", "data check", {})
    monkeypatch.setattr(tokenizer_threads, "_set_by_lf", True)  # the board's own default: the run decides
    jobs.launch(tmp_path / "b", "data check", {})
    with tokenizer_threads.batch_threads() as on:  # a Check tokenising in another of the board's threads
        assert on and os.environ["TOKENIZERS_PARALLELISM"] == "true"
        jobs.launch(tmp_path / "c", "data check", {})
    assert envs[0]["TOKENIZERS_PARALLELISM"] == "false"
    assert "TOKENIZERS_PARALLELISM" not in envs[1] and "TOKENIZERS_PARALLELISM" not in envs[2]
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"


def test_abort_stops_the_whole_process_group(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    (folder / jobs.PID_FILE).write_text(f"{process.pid} 0\n")
    job = jobs.Job(folder)
    wait_for(lambda: len(subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True,
                                        text=True).stdout.split()) == 2)
    assert job.state() == "running"
    assert jobs.abort(job, grace_seconds=10)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGTERM
    wait_for(lambda: not _group_alive(process.pid), timeout=10)  # the child got SIGTERM too
    assert job.state() == "aborted" and not jobs.abort(job)


def _group_alive(pgid: int) -> bool:
    """Any process of the group still running (zombies waiting for their reaper do not count)."""
    rows = subprocess.run(["ps", "-e", "-o", "pgid=,stat="], capture_output=True, text=True).stdout.splitlines()
    return any(row.split()[0] == str(pgid) and not row.split()[1].startswith("Z") for row in rows if row.strip())


def test_console_shows_progress_bars_as_a_terminal_does(tmp_path):
    job = jobs.Job(tmp_path)
    job.log_path.write_bytes(b"start\n 10%|#  | 1/10\r 50%|##### | 5/10\r100%|######| 10/10\ndone\n")
    assert jobs.read_console(job) == "start\n100%|######| 10/10\ndone\n"


# -- previews and suggestions ---------------------------------------------------------------------------
def test_template_suggestion_follows_the_model_family(tiny_llama, tmp_path):
    from lf_board.model_info import suggest_template

    assert suggest_template("smollm2-135m-instruct") == "smollm2"
    assert suggest_template(str(tiny_llama)) == "llama3"
    assert suggest_template(str(tmp_path)) is None
    assert suggest_template("no-such-org/no-such-model") is None


def test_row_preview_marks_the_trained_tokens(tiny_llama, data_dir):
    from lf_board.data_preview import dataset_names, preview_row

    assert dataset_names(str(data_dir)) == ["chats", "identity"]
    assert dataset_names("/nonexistent") == []
    config = {"model_name_or_path": str(tiny_llama), "template": "chatml", "dataset": ["identity"],
              "dataset_dir": str(data_dir)}
    result = preview_row(config, 1)
    trained = "".join(piece for piece, is_trained in result["pieces"] if is_trained)
    prompt = "".join(piece for piece, is_trained in result["pieces"] if not is_trained)
    assert "I am Lumen, made by the LF team." in trained and "What is your name?" in prompt
    assert "<|im_start|>assistant" in prompt and result["template"] == "chatml" and result["rows"] == 8
    assert result["trained"] < result["tokens"]
    chats = preview_row({**config, "dataset": ["chats"]}, 0)
    assert "Be brief." in "".join(p for p, _ in chats["pieces"])
    with pytest.raises(Exception, match="row 8 does not exist"):
        preview_row(config, 8)


def write_solid_video(path: Path, colours: list[tuple[int, int, int]], size: tuple[int, int] = (64, 48)) -> Path:
    """An mp4 whose frames are solid colours, one per entry."""
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for colour in colours:
            pixels = np.full((size[1], size[0], 3), colour, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_row_preview_shows_the_rows_images_and_first_video_frame(tiny_qwen2_vl, tmp_path):
    """A multimodal row: its image files in order, and one decoded frame -- the first -- of each video,
    beside the rendered text; sounds are named."""
    import numpy as np
    from mm_helpers import write_image_dataset

    from lf_board.data_preview import preview_row

    folder = write_image_dataset(tmp_path / "data")
    write_solid_video(folder / "clip.mp4", [(200, 30, 30)] + [(30, 30, 200)] * 3)
    (folder / "mixed.json").write_text(json.dumps([{
        "messages": [{"role": "user", "content": "<video>Is the ball like <image>? <audio>"},
                     {"role": "assistant", "content": "Yes."}],
        "images": ["mllm_demo_data/1.png"], "videos": ["clip.mp4"], "audios": ["https://example.com/a.wav"]}]))
    info = json.loads((folder / "dataset_info.json").read_text())
    info["mixed"] = {**info["mllm_demo"], "file_name": "mixed.json",
                     "columns": {"messages": "messages", "images": "images", "videos": "videos", "audios": "audios"}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    config = {"model_name_or_path": str(tiny_qwen2_vl), "template": "qwen2_vl", "dataset": ["mllm_demo"],
              "dataset_dir": str(folder)}
    two = preview_row(config, 4)  # "Is <image> the same colour as <image>?"
    assert two["media"] == [(str(folder / "mllm_demo_data" / "0.png"), "image 1: 0.png"),
                            (str(folder / "mllm_demo_data" / "1.png"), "image 2: 1.png")]
    assert two["sounds"] == [] and "<image>" in "".join(p for p, _ in two["pieces"])
    mixed = preview_row({**config, "dataset": ["mixed"]}, 0)
    (image, image_caption), (frame, frame_caption) = mixed["media"]
    assert (image, image_caption) == (str(folder / "mllm_demo_data" / "1.png"), "image 1: 1.png")
    assert frame_caption == "video 1: clip.mp4 (first frame)" and frame.size == (64, 48)
    red = np.asarray(frame).reshape(-1, 3).mean(axis=0)
    assert abs(red - [200, 30, 30]).max() < 12  # the first frame, not a later (blue) one
    assert mixed["sounds"] == ["https://example.com/a.wav"]  # named, not fetched


# -- export, evaluate, chat configs ----------------------------------------------------------------------------
def test_export_config_and_its_checks(tmp_path):
    from lf_board.export_tab import check_export, export_config

    run = write_run(tmp_path / "saves", "m/lora/done", 2, finished=True)
    config = export_config(run, tmp_path / "models" / "out", "gguf", "q8_0", "auto", 5, False)
    assert config == {"adapter_name_or_path": str(run), "export_dir": str(tmp_path / "models" / "out"),
                      "export_format": "gguf", "export_quantization": "q8_0"}
    target = tmp_path / "models" / "full"
    target.mkdir(parents=True)
    (target / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        check_export(export_config(run, target, "safetensors", "f16", "float16", 2, False))


def test_eval_results_table_for_both_kinds_of_task(tmp_path):
    from lf_board.eval_tab import results_table

    (tmp_path / "mc").mkdir()
    (tmp_path / "mc" / "results.json").write_text(json.dumps({
        "average": 50.0, "questions": 4, "categories": {"STEM": {"accuracy": 50.0, "questions": 4}},
        "subjects": {"algebra": {"category": "STEM", "accuracy": 50.0, "questions": 4}}}))
    headers, rows = results_table(tmp_path / "mc")
    assert headers == ["subject", "category", "questions", "accuracy"]
    assert rows == [["algebra", "STEM", 4, 50.0], ["STEM", "", 4, 50.0], ["Average", "", 4, 50.0]]
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "predict_results.json").write_text(json.dumps({"predict_bleu-4": 12.5, "predict_rouge-l": 30.1}))
    assert results_table(tmp_path / "p") == (["metric", "value"], [["predict_bleu-4", 12.5], ["predict_rouge-l", 30.1]])
    assert results_table(tmp_path) == ([], [])


def test_chat_and_eval_load_a_run_on_its_base(tmp_path):
    from lf_board.eval_tab import eval_config
    from lf_board.serve_config import engine_config

    saves = tmp_path / "saves"
    run = write_run(saves, "m/lora/done", 2, finished=True)
    config = engine_config("m/lora/done", saves)
    assert config == {"infer_backend": "huggingface", "model_name_or_path": "smollm2-135m-instruct",
                      "adapter_name_or_path": [str(run)], "template": "smollm2"}
    assert engine_config("smollm2-135m-instruct", saves) == {"infer_backend": "huggingface",
                                                             "model_name_or_path": "smollm2-135m-instruct"}
    predict = eval_config(config, "predict", tmp_path / "e", task_dir="evaluation", n_shot=5, dataset=["identity"],
                          dataset_dir="data", max_samples=10, batch_size=2, max_new_tokens=32)
    assert predict["task"] == "predict" and predict["dataset"] == ["identity"] and predict["do_sample"] is False
    assert "n_shot" not in predict and "infer_backend" not in predict
    mc = eval_config(config, "mmlu_test", tmp_path / "e", task_dir="evaluation", n_shot=0, dataset=[],
                     dataset_dir="data", max_samples=0, batch_size=2, max_new_tokens=32)
    assert mc["n_shot"] == 0 and "dataset" not in mc


def test_config_files_stay_in_their_folders(tmp_path, monkeypatch):
    from lf_board.app import Board
    from lf_board.labels import Labels

    monkeypatch.chdir(REPO)
    board = Board(RunsRoot(tmp_path / "saves"), "data", tmp_path / "configs", Labels("en"),
                  export_root=tmp_path / "models")
    assert board.config_path("mine") == (tmp_path / "configs" / "mine.yaml").resolve()
    with pytest.raises(ValueError):
        board.config_path("../../etc/evil.yaml")
    with pytest.raises(ValueError):
        board.readable_config("/etc/passwd")
    assert board.readable_config("examples/quickstart.yaml") == REPO / "examples" / "quickstart.yaml"
    assert "examples/train/sft_lora.yaml" in board.config_choices()
    with pytest.raises(ValueError):
        board.export_path("/tmp/elsewhere")
    assert board.export_path(str(tmp_path / "models" / "a")) == tmp_path / "models" / "a"


def test_lf_board_command_is_registered():
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-m", "lf_data.cli", "board", "--help"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--host" in result.stdout and "127.0.0.1" in result.stdout and "--auth" in result.stdout
    result = subprocess.run([sys.executable, "-m", "lf_data.cli", "board", "--auth", "nopassword"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "USER:PASSWORD" in result.stderr


def test_evaluate_tab_runs_lf_eval_and_shows_its_results(tmp_path, tiny_llama, data_dir):
    """What the Evaluate tab's Start does, end to end: its config, lf eval's own checks, the job,
    and the table read back from what `lf eval` wrote."""
    from lf_board.eval_tab import check_eval, eval_config, results_table
    from lf_board.serve_config import engine_config

    save_dir = tmp_path / "evals" / "predict"
    config = eval_config(engine_config(str(tiny_llama), tmp_path, template="chatml"), "predict", save_dir,
                         task_dir="evaluation", n_shot=0, dataset=["identity"], dataset_dir=str(data_dir),
                         max_samples=4, batch_size=4, max_new_tokens=8)
    check_eval(config)
    job = jobs.launch(tmp_path / "job", "eval", config)
    wait_for(lambda: job.state() in ("done", "failed"), timeout=300)
    assert job.state() == "done", jobs.read_console(job)
    headers, rows = results_table(save_dir)
    assert headers == ["metric", "value"]
    metrics = dict(rows)
    assert metrics["predict_samples"] == 4 and 0 <= metrics["predict_rouge-l"] <= 100
    assert len((save_dir / "generated_predictions.jsonl").read_text().splitlines()) == 4


def test_chat_tab_sends_an_uploaded_image_with_the_conversation(tiny_qwen2_vl, tmp_path):
    """An uploaded image goes with its message (an <image> placeholder where it sits) and stays with the
    conversation through gradio's own chatbot round trip; the answer is the engine's for those inputs."""
    import gradio as gr
    import numpy as np
    from PIL import Image

    from lf_board.chat_tab import ChatSession, send, turn
    from lf_board.serve_config import engine_config

    picture = tmp_path / "cat.png"
    Image.fromarray((np.random.RandomState(0).rand(60, 80, 3) * 255).astype("uint8")).save(picture)
    session = ChatSession()
    session.load(engine_config(str(tiny_qwen2_vl), tmp_path, "qwen2_vl"), "vl")
    calls = []
    real = session.engine.stream_chat

    def recording(messages, **kw):
        calls.append((messages, kw["images"]))
        return real(messages, **kw)

    session.engine.stream_chat = recording
    try:
        *_, (shown, box, image_box, status) = send(session, "What is it?", str(picture), [], "", "", 0.0, 0.7, 8, "en")
        assert calls[-1] == ([{"role": "user", "content": "<image>What is it?"}], [str(picture)])
        expected = "".join(real([{"role": "user", "content": "<image>What is it?"}], images=[picture],
                                temperature=0.0, max_new_tokens=8))
        assert expected and shown[-1] == {"role": "assistant", "content": expected}
        assert shown[0] == {"role": "user", "content": [{"path": str(picture)}, "What is it?"]}
        assert (box, image_box, status) == ("", None, "vl answered.")
        with gr.Blocks():
            bot = gr.Chatbot()
        history = bot.preprocess(bot.postprocess(shown))  # what the page hands back on the next turn
        assert turn(history[0]["content"]) == ("<image>What is it?", [str(picture)])
        *_, (shown, *_rest) = send(session, "And now?", None, history, "", "", 0.0, 0.7, 8, "en")
        assert calls[-1] == ([{"role": "user", "content": "<image>What is it?"},
                              {"role": "assistant", "content": turn(history[1]["content"])[0]},
                              {"role": "user", "content": "And now?"}], [str(picture)])
        assert shown[0]["content"] == [{"path": str(picture)}, "What is it?"]
    finally:
        session.unload()


def test_a_grpo_run_draws_its_reward_and_kl_beside_the_loss(tmp_path):
    from lf_board.train_tab import _frame

    run = tmp_path / "grpo"
    run.mkdir()
    lines = [{"step": 1, "loss": 0.0, "rewards/mean": 0.25, "kl": 0.0, "rewards/accuracy/mean": 0.25},
             {"step": 2, "loss": 0.01, "rewards/mean": 0.5, "kl": 0.002},
             {"step": 2, "train_loss": 0.005}]  # the closing line draws nothing
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    points = curve_points(run)
    assert points == [(1, "loss", 0.0), (1, "reward", 0.25), (1, "kl", 0.0),
                      (2, "loss", 0.01), (2, "reward", 0.5), (2, "kl", 0.002)]
    frame = _frame(points)
    assert list(frame.columns) == ["step", "curve", "value"] and sorted(set(frame["curve"])) == ["kl", "loss", "reward"]
