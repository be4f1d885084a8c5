"""The Train tab's form as data: which config keys it edits, their defaults, how a filled form
becomes an `lf train` config (and back), and the checks a config passes before a run starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from lf_board.runs import PathOutsideRoot, RunsRoot
from lf_models.args import FinetuningArguments, ModelArguments
from lf_train.args import FUSED_HEAD_STAGES, PADDING_FREE_STAGES, TrainArguments
from lf_train.rewards import REWARDS

QUANTIZATION_BITS = ("none", "4", "8")  # ModelArguments.quantization_bit is an int, not a Literal
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "polynomial")  # of transformers' many
DEFAULT_MODEL = "smollm2-135m-instruct"
AUTO_CHOICES = ("auto", "true", "false")
"""A switch whose library default depends on the machine or the model (`auto`: leave the key out)."""
AUTO_UNSET = ("auto", "", None)


def literal_choices(config_class: type, name: str) -> tuple[Any, ...]:
    """The values a config dataclass field's `Literal` type allows (`X | None` too).

    The form offers exactly what `lf train` accepts, read from the same types the CLI checks, so a
    stage or loss added to the library appears in the board without touching it."""
    hint = get_type_hints(config_class)[name]
    arms = (hint,) if get_origin(hint) is Literal else get_args(hint)
    choices = tuple(value for arm in arms if get_origin(arm) is Literal for value in get_args(arm))
    if not choices:
        raise TypeError(f"{config_class.__name__}.{name} is not a Literal field: {hint!r}")
    return choices


def _lora(values: dict[str, Any]) -> bool:
    return values.get("finetuning_type") == "lora"


@dataclass(frozen=True)
class FormField:
    key: str
    """The config key (LlamaFactory name) the field edits."""
    default: Any
    kind: str
    """text, int, float, bool, auto (true, false or the library's choice), choice or multi (several choices)."""
    choices: tuple = ()
    unset: tuple = ()
    """Values that mean "leave the key out of the YAML" (the library default applies)."""
    when: Callable[[dict[str, Any]], bool] | None = None
    """The key is written only when this holds for the form (LoRA keys for LoRA runs, ...)."""
    library: Any = ...
    """What `lf train` uses when the key is absent, where the board suggests another default: a
    loaded config that lacks the key shows this, so it trains exactly as it would from the CLI."""
    minimum: float | None = None
    """The smallest number the widget accepts (None: any)."""
    widget_id: str = ""
    """The page's element id where it is not the usual one (see elem_id)."""

    @property
    def absent(self) -> Any:
        return self.default if self.library is ... else self.library

    @property
    def elem_id(self) -> str:
        """The widget's id in the page: numbers keep the key's underscores, other widgets use hyphens.

        The browser test (and anyone scripting the page) finds widgets by these ids, so they never change."""
        if self.widget_id:
            return self.widget_id
        return f"train-{self.key if self.kind in ('int', 'float') else self.key.replace('_', '-')}"


def _padding_free_stage(values: dict[str, Any]) -> bool:
    return values.get("stage") in PADDING_FREE_STAGES


def _fused_head_stage(values: dict[str, Any]) -> bool:
    return values.get("stage") in FUSED_HEAD_STAGES


def _dpo(values: dict[str, Any]) -> bool:
    return values.get("stage") == "dpo"


def _ppo(values: dict[str, Any]) -> bool:
    return values.get("stage") == "ppo"


def _grpo(values: dict[str, Any]) -> bool:
    return values.get("stage") == "grpo"


GROUPS: dict[str, tuple[FormField, ...]] = {
    "model": (
        FormField("model_name_or_path", DEFAULT_MODEL, "text", widget_id="train-model"),
        FormField("template", "", "choice", unset=("", None)),
        FormField("stage", "sft", "choice", literal_choices(TrainArguments, "stage")),
        FormField("finetuning_type", "lora", "choice", literal_choices(FinetuningArguments, "finetuning_type")),
        FormField("quantization_bit", "none", "choice", QUANTIZATION_BITS, unset=("none", "", None)),
    ),
    "data": (
        FormField("dataset_dir", "data", "text"),
        FormField("dataset", [], "multi", unset=([], None)),
        FormField("cutoff_len", 1024, "int", library=2048),
        FormField("max_samples", 0, "int", unset=(0, None)),
        FormField("val_size", 0.0, "float", unset=(0, 0.0, None)),
    ),
    "hyper": (
        FormField("learning_rate", 1e-4, "float", library=5e-5),
        FormField("num_train_epochs", 3.0, "float"),
        FormField("max_steps", 0, "int", unset=(0, -1, None)),
        FormField("per_device_train_batch_size", 2, "int", library=8, minimum=1),
        FormField("gradient_accumulation_steps", 8, "int", library=1, minimum=1),
        FormField("lr_scheduler_type", "cosine", "choice", SCHEDULERS, library="linear"),
        FormField("warmup_ratio", 0.0, "float", unset=(0, 0.0, None)),
        FormField("logging_steps", 5, "int", minimum=1),
        FormField("save_steps", 100, "int", minimum=1),
    ),
    "lora": (
        FormField("lora_rank", 8, "int", when=_lora, minimum=1),
        FormField("lora_alpha", 16, "int", when=_lora, unset=(0, None), library=0, minimum=0),
        FormField("lora_dropout", 0.0, "float", when=_lora, unset=(0, 0.0, None), minimum=0),
        FormField("lora_target", "all", "text", when=_lora),
        FormField("loraplus_lr_ratio", 0.0, "float", when=_lora, unset=(0, 0.0, None), minimum=0),
    ),
    "extra": (
        FormField("gradient_checkpointing", True, "bool", unset=(True, None)),
        FormField("bf16", "auto", "auto", AUTO_CHOICES, unset=AUTO_UNSET),
        FormField("fp16", "auto", "auto", AUTO_CHOICES, unset=AUTO_UNSET),
        FormField("flash_attn", "auto", "choice", literal_choices(ModelArguments, "flash_attn"), unset=("auto", None)),
        FormField("padding_free", "auto", "auto", AUTO_CHOICES, unset=AUTO_UNSET, when=_padding_free_stage),
        FormField("fused_lm_head", "auto", "auto", AUTO_CHOICES, unset=AUTO_UNSET, when=_fused_head_stage),
        FormField("use_liger_kernel", False, "bool", unset=(False, None)),
        FormField("use_galore", False, "bool", unset=(False, None)),
        FormField("use_badam", False, "bool", unset=(False, None)),
        FormField("deepspeed", "", "choice", unset=("", None)),
        FormField("pref_loss", "sigmoid", "choice", literal_choices(TrainArguments, "pref_loss"), when=_dpo),
        FormField("reward_model", "", "text", when=_ppo, unset=("", None)),
        FormField("reward_funcs", ["accuracy"], "multi", tuple(REWARDS), when=_grpo, unset=([], None)),
        FormField("num_generations", 8, "int", when=_grpo, minimum=2),
        FormField("max_completion_length", 256, "int", when=_grpo, library=512, minimum=1),
        FormField("beta", 0.0, "float", when=_grpo, minimum=0),
        FormField("loss_type", "dapo", "choice", literal_choices(TrainArguments, "loss_type"), when=_grpo),
    ),
    "output": (
        FormField("output_dir", "", "text"),
    ),
}
"""The form's fields by section of the page, in the order the page shows them."""
FIELDS: tuple[FormField, ...] = tuple(f for section in GROUPS.values() for f in section)
FIELD_KEYS = tuple(f.key for f in FIELDS)
_BY_KEY = {f.key: f for f in FIELDS}


def field(key: str) -> FormField:
    """The form field editing config key `key`."""
    return _BY_KEY[key]


class BoardConfigError(ValueError):
    """A config the board refuses to start; the message says what to change."""


def _typed(field: FormField, value: Any) -> Any:
    if value is None:
        return None
    if field.kind == "int":
        return int(value) if value != "" else None
    if field.kind == "float":
        return float(value) if value != "" else None
    if field.kind == "bool":
        return bool(value)
    if field.kind == "auto":
        return None if value in field.unset else value if isinstance(value, bool) else str(value).lower() == "true"
    if field.kind == "multi":
        return [v for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    if field.key == "quantization_bit":
        return None if value in field.unset else int(value)
    return value.strip() if isinstance(value, str) else value


def build_config(values: dict[str, Any], extra_yaml: str = "") -> dict[str, Any]:
    """A filled form (key -> widget value) and extra YAML keys -> the flat `lf train` config."""
    config: dict[str, Any] = {}
    for field in FIELDS:
        value = values.get(field.key, field.default)
        if value in field.unset or (field.when is not None and not field.when(values)):
            continue
        typed = _typed(field, value)
        if typed is None or typed in field.unset:
            continue
        config[field.key] = typed
    extra = parse_extra(extra_yaml)
    config.update(extra)
    return config


def parse_extra(extra_yaml: str) -> dict[str, Any]:
    if not extra_yaml or not extra_yaml.strip():
        return {}
    try:
        extra = yaml.safe_load(extra_yaml)
    except yaml.YAMLError as err:
        raise BoardConfigError(f"extra keys are not valid YAML: {err}") from None
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise BoardConfigError("extra keys must be `key: value` lines.")
    return extra


def form_values(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The inverse of build_config: widget values for every field, and the keys the form lacks as YAML."""
    values: dict[str, Any] = {}
    for field in FIELDS:
        value = config.get(field.key)
        if value is None:
            values[field.key] = field.absent
        elif field.key == "quantization_bit":
            values[field.key] = str(value)
        elif field.kind == "auto":
            values[field.key] = "true" if value is True or str(value).lower() == "true" else "false"
        elif field.kind == "multi":
            values[field.key] = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        elif field.key == "lora_target" and isinstance(value, list):
            values[field.key] = ",".join(value)
        else:
            values[field.key] = value
    rest = {k: v for k, v in config.items() if k not in FIELD_KEYS}
    return values, (yaml.safe_dump(rest, sort_keys=False, allow_unicode=True) if rest else "")


def to_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def train_command(config_path: Path | str) -> str:
    return f"lf train {config_path}"


def check_model_reference(reference: str) -> None:
    """The cheap checks of a model reference (no download, no conversion of GGUF files)."""
    from lf_data.errors import ConfigError
    from lf_models.bundled import BUNDLED_MODELS

    if reference in BUNDLED_MODELS:
        BUNDLED_MODELS[reference].path()
        return
    if reference.endswith(".gguf"):
        if not Path(reference).expanduser().is_file():
            raise ConfigError(f"GGUF file {reference!r} does not exist; give the path of an existing .gguf file.")
        return
    from lf_models.args import ModelArguments
    from lf_models.loader import resolve_model

    resolve_model(ModelArguments(model_name_or_path=reference))


WRITTEN_PATH_KEYS = ("tokenized_path", "cache_dir")
"""Config keys besides output_dir that name a folder the run writes into."""


def place_in_runs_root(config: dict[str, Any], runs: RunsRoot) -> str:
    """Make the folders a run writes into absolute, under the runs root (in place), so `lf train`,
    whatever its working directory, writes where the board checked; the run's name. A folder outside
    the root is a BoardConfigError."""
    output_dir = config.get("output_dir")
    if not output_dir:
        raise BoardConfigError("`output_dir` is empty: give the run a folder under the runs root.")
    try:
        name = runs.name_of(output_dir)
    except PathOutsideRoot:
        raise BoardConfigError(f"output_dir {output_dir!r} is outside the runs root {runs.root}; the board "
                               "writes runs only under it.") from None
    config["output_dir"] = str(runs.inside(output_dir))  # the folder checked is the folder `lf train` gets
    for key in WRITTEN_PATH_KEYS:  # form fields and "more config keys" alike
        if config.get(key):
            try:
                config[key] = str(runs.inside(str(config[key])))
            except PathOutsideRoot:
                raise BoardConfigError(f"{key} {config[key]!r} is outside the runs root {runs.root}; the board "
                                       "lets a run write only under it.") from None
    return name


def validate(config: dict[str, Any], runs: RunsRoot) -> None:
    """Everything `lf train` checks before loading a model, plus what the board itself needs.

    Raises BoardConfigError with the message to show; a config that passes starts a run that
    at least gets as far as loading the model. The folders a run writes into are made absolute (under
    the runs root), so `lf train`, whatever its working directory, writes where the board checked."""
    from lf_data.errors import LFError

    name = place_in_runs_root(config, runs)
    if runs.job(name).running():
        raise BoardConfigError(f"run {name!r} is already running; abort it or choose another output_dir.")
    if not config.get("model_name_or_path"):
        raise BoardConfigError("no model chosen: give a model folder, a hub id, a .gguf file or "
                               f"{DEFAULT_MODEL}.")
    deepspeed = config.get("deepspeed")
    if isinstance(deepspeed, str) and not Path(deepspeed).is_file():
        raise BoardConfigError(f"deepspeed config {deepspeed!r} does not exist.")
    try:
        from lf_train.plan import parse_train_config

        parse_train_config(config, "the board's form")  # model combinations included
        check_model_reference(config["model_name_or_path"])
    except LFError as err:
        raise BoardConfigError(str(err)) from None
    except (ValueError, TypeError, ImportError, OSError) as err:  # raised by TrainingArguments itself
        raise BoardConfigError(f"{type(err).__name__}: {err}") from None
