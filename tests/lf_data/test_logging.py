"""One verbosity switch (LF_VERBOSITY, `--quiet`/`--verbose`) and one list of harmless library messages."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from lf_data import cli
from lf_data.errors import ConfigError

BNB = "bitsandbytes.backends.cpu.ops"
BNB_MESSAGE = ("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
               "`pip install kernels` and the kernels >= 0.11.1")


@pytest.fixture(autouse=True)
def _back_to_info(monkeypatch):
    """Every test here leaves logging as the other tests expect it: LF_VERBOSITY unset, info level."""
    for variable in (cli.VERBOSITY_ENV, "LLAMAFACTORY_VERBOSITY", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                     "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(variable, "")  # recorded, so the teardown restores the variable's absence
        monkeypatch.delenv(variable)
    yield
    import transformers

    monkeypatch.setenv(cli.VERBOSITY_ENV, "info")
    cli.setup_logging()
    transformers.logging.enable_progress_bar()


def record(logger: str, message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, message, ("exc",), None)


def passes(logger: str, message: str) -> bool:
    return bool(logging.getLogger(logger).filter(record(logger, message)))


def future_warning_shown(message: str) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn(message, FutureWarning, stacklevel=1)
    return bool(seen)


@pytest.mark.parametrize(("value", "expected"), [(None, "info"), ("", "info"), ("quiet", "quiet"),
                                                 ("DEBUG", "debug"), (" info ", "info")])
def test_verbosity_comes_from_the_environment(value, expected, monkeypatch):
    if value is not None:
        monkeypatch.setenv(cli.VERBOSITY_ENV, value)
    assert cli.verbosity() == expected
    assert cli.show_progress() == (expected != "quiet")


@pytest.mark.parametrize(("theirs", "ours", "expected"), [("WARN", None, "quiet"), ("ERROR", None, "quiet"),
                                                          ("DEBUG", None, "debug"), ("INFO", None, "info"),
                                                          ("WARN", "debug", "debug")])
def test_llamafactorys_verbosity_variable_applies_unless_lf_verbosity_is_set(theirs, ours, expected, monkeypatch):
    monkeypatch.setenv("LLAMAFACTORY_VERBOSITY", theirs)
    if ours is not None:
        monkeypatch.setenv(cli.VERBOSITY_ENV, ours)
    assert cli.verbosity() == expected
    monkeypatch.setenv("LLAMAFACTORY_VERBOSITY", "loud")
    if ours is None:
        with pytest.raises(ConfigError, match="LLAMAFACTORY_VERBOSITY='LOUD' is not one of DEBUG, INFO, WARN, ERROR"):
            cli.verbosity()


def test_an_unknown_verbosity_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(cli.VERBOSITY_ENV, "verbose")
    with pytest.raises(ConfigError, match="LF_VERBOSITY='verbose' is not one of quiet, info, debug"):
        cli.setup_logging()


def test_flags_anywhere_on_the_line_set_the_switch(monkeypatch):
    import os

    assert cli.take_verbosity_flags(["train", "x.yaml", "lr=1"]) == ["train", "x.yaml", "lr=1"]
    assert cli.VERBOSITY_ENV not in os.environ
    assert cli.take_verbosity_flags(["--verbose", "train", "x.yaml", "--quiet"]) == ["train", "x.yaml"]
    assert os.environ[cli.VERBOSITY_ENV] == "quiet"  # the last flag wins
    assert cli.main(["version", "--verbose"]) == 0  # the command never sees the flag
    assert os.environ[cli.VERBOSITY_ENV] == "debug"


def test_info_hides_the_known_harmless_messages_and_nothing_else():
    import transformers

    cli.setup_logging()
    assert logging.getLogger("lf_train").getEffectiveLevel() == logging.INFO
    assert transformers.logging.get_verbosity() == logging.WARNING
    assert not passes(BNB, BNB_MESSAGE)
    assert passes(BNB, "another bitsandbytes warning")
    assert not passes("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, we were "
                                   "unable to detect it.")
    assert passes("DeepSpeed", "something else")
    assert not future_warning_shown("`is_gradient_checkpointing` is deprecated and will be removed in v6.")
    assert future_warning_shown("another deprecation")


def test_debug_shows_everything_and_quiet_only_problems(monkeypatch):
    import transformers

    monkeypatch.setenv(cli.VERBOSITY_ENV, "debug")
    cli.setup_logging()
    assert logging.getLogger("lf_eval").getEffectiveLevel() == logging.DEBUG
    assert transformers.logging.get_verbosity() == logging.INFO
    assert passes(BNB, BNB_MESSAGE)
    assert future_warning_shown("`is_gradient_checkpointing` is deprecated and will be removed in v6.")

    monkeypatch.setenv(cli.VERBOSITY_ENV, "quiet")
    cli.setup_logging()
    assert logging.getLogger("lf_eval").getEffectiveLevel() == logging.WARNING
    assert transformers.logging.get_verbosity() == logging.ERROR
    assert not passes(BNB, BNB_MESSAGE)
    assert not future_warning_shown("another deprecation")
    assert not transformers.utils.logging.is_progress_bar_enabled()
    from transformers import TrainingArguments

    assert TrainingArguments(output_dir="unused", report_to="none").disable_tqdm  # the Trainer's bar too


def test_a_command_that_loads_peft_prints_no_library_noise():
    """What every `lf train/chat/eval/export` imports, after setup_logging, in a fresh process."""
    code = ("from lf_data.cli import setup_logging; "
            "setup_logging(); import peft, accelerate, transformers; from peft import LoraConfig; "
            "from transformers import Trainer")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""
