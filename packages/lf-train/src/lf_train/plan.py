"""The plan of a training run: every key of the flat config typed and checked, and every cheap
fact about the run checked, before anything loads. Stages receive the plan and read it typed.

The sequence is the one every LF command takes (`lf_data.config.parse_sections`): LF's own sections,
then the Hugging Face `TrainingArguments` keys, then combinations across sections, then the chosen
stage's own checks (`Stage.check`), then the state of output_dir.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from lf_data.args import DataArguments
from lf_data.config import Range, build_section, coerce_section, parse_sections, section_keys
from lf_data.dataset_info import get_dataset_attr
from lf_data.errors import ConfigError
from lf_data.pipeline import check_stage_data
from lf_data.run_folder import FINISHED_MARKER, RUN_FILES
from lf_data.templates import get_template
from lf_models.args import FinetuningArguments, ModelArguments, check_model_combination
from lf_models.precision import choose_precision
from lf_train.args import TrainArguments

LF_SECTIONS = (DataArguments, ModelArguments, FinetuningArguments, TrainArguments)
# Defaults LF prefers over the Hugging Face ones (a user's value always wins).
HF_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "logging_steps": 5,
    "save_steps": 100,
    "include_num_input_tokens_seen": "all",
    "save_total_limit": 3,
}
# Legal values of the Hugging Face keys LF passes on (LF's own keys declare theirs on the field).
HF_RANGES: dict[str, Range] = {
    "per_device_train_batch_size": Range(ge=1), "per_device_eval_batch_size": Range(ge=1),
    "gradient_accumulation_steps": Range(ge=1), "learning_rate": Range(gt=0), "num_train_epochs": Range(ge=0),
    "max_steps": Range(ge=-1, hint="-1 trains for num_train_epochs"), "weight_decay": Range(ge=0),
    "max_grad_norm": Range(ge=0), "adam_beta1": Range(ge=0, lt=1), "adam_beta2": Range(ge=0, lt=1),
    "adam_epsilon": Range(gt=0), "warmup_steps": Range(ge=0), "logging_steps": Range(gt=0),
    "save_steps": Range(gt=0), "eval_steps": Range(gt=0), "save_total_limit": Range(ge=0),
    "dataloader_num_workers": Range(ge=0), "seed": Range(ge=0),
}


@dataclasses.dataclass
class TrainPlan:
    """Everything a stage needs to know about the run, typed."""

    data: DataArguments
    model: ModelArguments
    finetuning: FinetuningArguments
    train: TrainArguments
    training_args: Any  # transformers.TrainingArguments
    resume_from_checkpoint: str | None
    clear_output_dir: bool


def parse_train_config(config: dict[str, Any], source: str = "") -> TrainPlan:
    """Every key checked and typed, every cheap fact about the run checked; nothing loaded yet."""
    from transformers import TrainingArguments

    from lf_train.stages import STAGES

    hf_keys = set(section_keys(TrainingArguments))
    data, model, finetuning, train = parse_sections(config, *LF_SECTIONS, source=source, passthrough=hf_keys)
    hf_values = coerce_section(TrainingArguments, config, HF_RANGES)  # typed before any value is compared
    check_model_combination(model, finetuning)
    stage = STAGES[train.stage]

    if not config.get("output_dir"):
        raise ConfigError("`output_dir` is required: the folder where the adapter, logs and checkpoints go.")
    if data.template is not None:
        get_template(data.template)
    if not data.dataset:
        raise ConfigError("no `dataset` given: name one or more datasets from dataset_info.json.")
    for name in data.dataset + (data.eval_dataset or []):
        attr = get_dataset_attr(name, data.dataset_dir)
        if attr.source == "file" and not Path(attr.location).exists():
            raise ConfigError(f"{attr}: file {attr.location!r} does not exist. Put the file there or fix "
                              "`file_name` in dataset_info.json (it is relative to dataset_dir).")
    check_stage_data(data, train.stage, data.dataset + (data.eval_dataset or []))
    if train.use_galore:
        if finetuning.finetuning_type == "lora":
            raise ConfigError("use_galore projects the gradients of full weights; use finetuning_type: full or "
                              "freeze (LoRA already trains low-rank matrices).")
        if "optim" in config:
            raise ConfigError("use_galore chooses the optimizer itself; remove `optim`.")
        if train.galore_layerwise and hf_values.get("gradient_accumulation_steps", 1) > 1:
            raise ConfigError("galore_layerwise updates during the backward pass: gradient_accumulation_steps must be 1.")
    if train.use_badam:
        if finetuning.finetuning_type != "full":
            raise ConfigError("use_badam trains blocks of the full weights; use finetuning_type: full.")
        if "optim" in config:
            raise ConfigError("use_badam chooses the optimizer itself; remove `optim`.")
        if train.badam_mode == "ratio" and config.get("deepspeed"):
            raise ConfigError("badam_mode: ratio does not work with DeepSpeed; use badam_mode: layer.")
        try:
            import badam  # noqa: F401
        except ImportError:
            raise ConfigError("use_badam needs the badam package: pip install 'lf-train[badam]'.") from None
    if train.use_muon and "optim" in config:
        raise ConfigError("use_muon chooses the optimizer itself; remove `optim`.")
    wants_fsdp = config.get("fsdp") or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    if wants_fsdp and not _has_accelerator():
        raise ConfigError("FSDP shards a model over GPUs; on a CPU accelerate would run it as plain DDP. Use "
                          "`deepspeed: examples/deepspeed/ds_z3_config.json` (ZeRO-3 runs on CPUs) or drop fsdp.")
    if config.get("do_predict"):
        if not train.predict_with_generate:
            raise ConfigError("do_predict generates answers and scores them; predict_with_generate: false is not "
                              "supported (use do_eval for the loss on eval_dataset).")
        if not stage.can_predict or not data.eval_dataset:
            raise ConfigError("do_predict needs stage: sft and eval_dataset: the rows whose answers are generated "
                              "and scored against their labels.")
    if data.streaming and not config.get("max_steps"):
        raise ConfigError("streaming: true needs max_steps (the number of rows is unknown in advance).")

    precision = choose_precision(config.get("bf16"), config.get("fp16")) if not model.pure_bf16 else None
    hf_config = {**HF_DEFAULTS, **hf_values}
    if precision is not None:
        hf_config.update(bf16=precision.bf16, fp16=precision.fp16)
    if model.pure_bf16:  # the weights are bf16 themselves: no autocast, no fp32 master copy
        hf_config.update(bf16=False, fp16=False)
    if hf_config.get("gradient_checkpointing") and not hf_config.get("gradient_checkpointing_kwargs"):
        hf_config["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if train.warmup_ratio is not None:
        hf_config["warmup_steps"] = train.warmup_ratio
    if train.use_galore:  # transformers' GaLore integration; the target modules are set once the model is loaded
        hf_config["optim"] = "galore_adamw_layerwise" if train.galore_layerwise else "galore_adamw"
        hf_config["optim_args"] = (f"rank={train.galore_rank},update_proj_gap={train.galore_update_interval},"
                                   f"scale={train.galore_scale}")
        hf_config["optim_target_modules"] = ["placeholder"]
    if "use_cpu" not in config and not _has_accelerator():
        hf_config["use_cpu"] = True  # what makes accelerate pick gloo for processes started by torchrun on a CPU
    training_args = build_section(TrainingArguments, hf_config)
    plan = TrainPlan(data, model, finetuning, train, training_args, None, False)
    stage.check(plan)

    output_dir = Path(training_args.output_dir)
    plan.resume_from_checkpoint, plan.clear_output_dir = _plan_output_dir(
        output_dir, train.overwrite_output_dir, training_args.resume_from_checkpoint)
    if plan.clear_output_dir:
        _check_clearable(output_dir, [model.model_name_or_path, *(model.adapter_name_or_path or []),
                                      data.dataset_dir, train.reward_model])
    return plan


def _has_accelerator() -> bool:
    import torch

    return torch.accelerator.is_available()


def _plan_output_dir(output_dir: Path, overwrite: bool, resume: str | None) -> tuple[str | None, bool]:
    """(checkpoint to resume from, whether to clear output_dir first)."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume is not None:
        if not Path(resume).is_dir():
            raise ConfigError(f"resume_from_checkpoint {resume!r} is not a checkpoint folder.")
        return resume, False
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        if output_dir.exists() and not output_dir.is_dir():
            raise ConfigError(f"output_dir {str(output_dir)!r} is a file; choose a folder path.")
        return None, False
    if overwrite:
        return None, True
    if (output_dir / FINISHED_MARKER).is_file():
        raise ConfigError(f"output_dir {str(output_dir)!r} already holds a finished run. Choose another "
                          "output_dir, or set overwrite_output_dir=true to replace it.")
    last = get_last_checkpoint(str(output_dir))
    if last is not None:
        return last, False
    leftovers = {p.name for p in output_dir.iterdir()} - set(RUN_FILES)
    if leftovers:
        raise ConfigError(f"output_dir {str(output_dir)!r} holds files that are not an LF run "
                          f"({', '.join(sorted(leftovers)[:3])}...). Choose an empty folder, or set "
                          "overwrite_output_dir=true to replace its contents.")
    return None, True  # a run that stopped before its first checkpoint: start it again


def _check_clearable(output_dir: Path, inputs: list[str | None]) -> None:
    """Replacing output_dir deletes it: refuse when it holds the working directory or an input."""
    target = output_dir.expanduser().resolve()
    protected = [Path.cwd(), *(Path(p).expanduser().resolve() for p in inputs if p and Path(p).expanduser().exists())]
    for path in protected:
        if path == target or target in path.parents:
            raise ConfigError(f"output_dir {str(output_dir)!r} contains {str(path)!r}, which this run reads or runs "
                              "in; overwrite_output_dir would delete it. Choose a separate output_dir.")


def resolved_config(plan: TrainPlan) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for section in (plan.data, plan.model, plan.finetuning, plan.train):
        config.update(dataclasses.asdict(section))
    hf = plan.training_args.to_dict()
    for key in section_keys(type(plan.training_args)):
        if key in hf:
            config[key] = hf[key]
    config["resume_from_checkpoint"] = None
    return config
