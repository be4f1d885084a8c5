"""The plan of a training run: every key of the flat config typed and checked, and every cheap
fact about the run checked, before anything loads. Stages receive the plan and read it typed.

Two steps, in the order every LF command takes (`lf_data.config.parse_sections`):
- `check_train_config` imports no torch (a typo or a bad value answers in well under a second):
  LF's sections, the Hugging Face `TrainingArguments` keys (names read from transformers' source),
  their ranges, combinations across sections, the datasets, the stage's own rules, the state of
  output_dir and whether a checkpoint there can be resumed with this config.
- `finish_plan` adds what needs torch but no weights: precision, the TrainingArguments object
  (`parse_train_config` is both).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from lf_data.args import DataArguments
from lf_data.config import Range, build_section, coerce_value, known_keys, parse_sections, section_keys
from lf_data.dataset_info import get_dataset_attr, media_kinds
from lf_data.errors import ConfigError
from lf_data.llamafactory_keys import translate_for
from lf_data.pipeline import check_stage_data
from lf_data.run_folder import FINISHED_MARKER, RESOLVED_CONFIG, RUN_FILES, checkpoints, read_run_config
from lf_data.templates import get_template
from lf_models.adapters import check_lora_target
from lf_models.args import ADAPTER_TYPES, FinetuningArguments, ModelArguments, check_model_combination
from lf_models.families import check_media_support
from lf_train.args import TrainArguments
from lf_train.profiling import ProfilerArguments
from lf_train.ray_launch import RayArguments
from lf_train.stages import STAGES

logger = logging.getLogger(__name__)
LF_SECTIONS = (DataArguments, ModelArguments, FinetuningArguments, TrainArguments, ProfilerArguments, RayArguments)
# Defaults LF prefers over the Hugging Face ones (a user's value always wins).
HF_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "logging_steps": 5,
    "save_steps": 100,
    "include_num_input_tokens_seen": "all",
    "save_total_limit": 3,
}


CHECKPOINTING_KEYS = ("activation_checkpointing", "gradient_checkpointing")  # transformers 5's name, its old alias


def checkpointing_asked(hf: dict[str, Any]) -> bool | None:
    """The config's own gradient checkpointing switch, under either name, or None."""
    return next((bool(hf[key]) for key in CHECKPOINTING_KEYS if hf.get(key) is not None), None)


def uses_checkpointing(hf: dict[str, Any], train: TrainArguments) -> bool:
    """Gradient checkpointing unless the config turns it off, as LlamaFactory, TRL and Unsloth default to: a
    LlamaFactory recipe that fits a GPU's memory there fits it here (`gradient_checkpointing: false` trades
    the memory for speed; a model without checkpointing support trains without it: lf_train.run)."""
    asked = checkpointing_asked(hf)
    return (not train.disable_gradient_checkpointing) if asked is None else asked


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
# Resuming a checkpoint with another value of these cannot work (other shapes, other optimizer state).
RESUME_BREAKING = ("stage", "model_name_or_path", "finetuning_type", "lora_rank", "lora_target", "additional_target",
                   "use_dora", "use_rslora", "pissa_init", "quantization_bit", "freeze_trainable_layers",
                   "freeze_trainable_modules", "freeze_extra_modules", "new_special_tokens", "use_galore",
                   "use_badam", "use_muon", "optim", "reward_model", "use_apollo", "apollo_layerwise",
                   "use_adam_mini", "mixture_of_depths", "oft_rank", "oft_block_size", "oft_target", "use_llama_pro",
                   "add_tokens", "add_special_tokens", "new_special_tokens_config")
# These change the schedule: the checkpoint's own schedule continues, which may not be what is meant.
RESUME_SCHEDULE = ("learning_rate", "num_train_epochs", "lr_scheduler_type", "warmup_steps", "warmup_ratio",
                   "per_device_train_batch_size", "gradient_accumulation_steps")
# Annotated `str` in transformers, but it also takes a list of options (`fsdp: [full_shard, auto_wrap]`, as
# LlamaFactory's recipes write it) or true: left to transformers to check.
HF_LOOSE_TYPES: dict[str, Any] = {"fsdp": Any}
_SIMPLE_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "int | None": int | None,
                 "float | None": float | None, "bool | None": bool | None, "str | None": str | None}


@dataclasses.dataclass
class TrainPlan:
    """Everything a stage needs to know about the run, typed."""

    data: DataArguments
    model: ModelArguments
    finetuning: FinetuningArguments
    train: TrainArguments
    hf: dict[str, Any]
    """The Hugging Face `TrainingArguments` keys the config gave, typed and range-checked."""
    profiler: ProfilerArguments = dataclasses.field(default_factory=ProfilerArguments)
    ray: RayArguments = dataclasses.field(default_factory=RayArguments)
    """The Ray Train launch (`USE_RAY=1`): workers, ray.init arguments, resources, Ray's storage."""
    generation: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The generation keys (lf-serve's GeneratingArguments) the config gave: do_predict's decoding."""
    training_args: Any = None
    """transformers.TrainingArguments (set by `finish_plan`; None after `check_train_config` alone)."""
    resume_from_checkpoint: str | None = None
    clear_output_dir: bool = False
    predict_only: bool = False
    """do_predict with eval_dataset and no dataset (and no do_train): generate and score, train nothing."""

    def sections(self) -> tuple[Any, ...]:
        """LF's own sections of the config, in LF_SECTIONS order."""
        return self.data, self.model, self.finetuning, self.train, self.profiler, self.ray


@functools.cache
def hf_training_fields() -> dict[str, Any]:
    """The keys of transformers' `TrainingArguments` and the types LF checks, read from its source
    file so that checking a config imports no torch (falls back to importing it)."""
    spec = importlib.util.find_spec("transformers")
    source = Path(next(iter(spec.submodule_search_locations))) / "training_args.py" if spec else None
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))  # type: ignore[union-attr]
        body = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments")
    except (AttributeError, OSError, SyntaxError, StopIteration):
        from transformers import TrainingArguments

        return dict.fromkeys(section_keys(TrainingArguments), Any)
    fields = {node.target.id: _SIMPLE_TYPES.get(ast.unparse(node.annotation), Any) for node in body.body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    return {**fields, **HF_LOOSE_TYPES}


def check_train_config(config: dict[str, Any], source: str = "") -> TrainPlan:
    """Every key checked and typed, every cheap fact about the run checked; no torch imported."""
    from lf_serve.args import GeneratingArguments

    fields = hf_training_fields()
    resume_last = config.get("resume_from_checkpoint")
    if isinstance(resume_last, bool) or str(resume_last).lower() in ("true", "false"):
        # transformers' convention: true resumes from the last checkpoint in output_dir
        config = {k: v for k, v in config.items() if k != "resume_from_checkpoint"}
        resume_last = str(resume_last).lower() == "true"
    else:
        resume_last = False
    config = translate_for("train", config, *LF_SECTIONS, GeneratingArguments, passthrough=fields, source=source)
    data, model, finetuning, train, profiler, ray = parse_sections(config, *LF_SECTIONS, source=source,
                                                    passthrough=[*fields, *section_keys(GeneratingArguments)])
    hf = {key: coerce_value(key, value, fields[key]) for key, value in config.items() if key in fields}
    own = known_keys(*LF_SECTIONS)  # max_new_tokens is TrainArguments' (ppo and do_predict share it)
    given = {k: v for k, v in config.items() if k in section_keys(GeneratingArguments) and k not in own}
    generation = build_section(GeneratingArguments, given)  # typed and checked now, not after training
    generation_keys = {k: getattr(generation, k) for k in given}
    for key, limit in HF_RANGES.items():  # typed before any value is compared
        limit.check(key, hf.get(key))
    check_model_combination(model, finetuning)
    plan = TrainPlan(data, model, finetuning, train, hf, generation=generation_keys, profiler=profiler, ray=ray)
    stage = STAGES[train.stage]

    if not hf.get("output_dir"):
        raise ConfigError("`output_dir` is required: the folder where the adapter, logs and checkpoints go.")
    if data.template is not None:
        get_template(data.template)
    plan.predict_only = not data.dataset and bool(hf.get("do_predict")) and not hf.get("do_train")
    if not data.dataset and not plan.predict_only:
        raise ConfigError("no `dataset` given: name one or more datasets from dataset_info.json (or set "
                          "do_predict: true with eval_dataset to only generate and score answers).")
    for name in (data.dataset or []) + (data.eval_dataset or []):
        attr = get_dataset_attr(name, data.dataset_dir)
        if attr.source == "file" and not Path(attr.location).exists():
            raise ConfigError(f"{attr}: file {attr.location!r} does not exist. Put the file there or fix "
                              "`file_name` in dataset_info.json (it is relative to dataset_dir).")
    check_stage_data(data, train.stage, (data.dataset or []) + (data.eval_dataset or []))
    media = media_kinds((data.dataset or []) + (data.eval_dataset or []), data.dataset_dir)
    check_media_support(model.model_name_or_path, media)
    if media and train.stage in ("pt", "ppo"):  # pt packs plain text; ppo samples text-only rollouts
        name, kinds = next(iter(media.items()))
        raise ConfigError(f"dataset {name!r} has {' and '.join(kinds)}, which stage {train.stage} does not feed to the "
                          "model; use stage sft, dpo, kto or rm for multimodal data, or remove the media column(s) "
                          "from its entry in dataset_info.json.")
    _check_optimizer_choice(train, finetuning, hf)
    if train.mixture_of_depths:
        from lf_train.mixture_of_depths import check_mixture_of_depths

        check_mixture_of_depths(train.mixture_of_depths, model, finetuning.finetuning_type)
    if train.ref_model is None and (train.ref_model_adapters or train.ref_model_quantization_bit):
        raise ConfigError("ref_model_adapters and ref_model_quantization_bit describe ref_model; set ref_model too.")
    if train.ref_model is not None and not stage.needs_reference(train):
        raise ConfigError(f"ref_model is the reference of a preference loss with one; stage {train.stage} with "
                          f"pref_loss {train.pref_loss} uses none. Remove ref_model.")
    if train.disable_shuffling and hf.get("train_sampling_strategy", "sequential") != "sequential":
        raise ConfigError(f"disable_shuffling: true and train_sampling_strategy: {hf['train_sampling_strategy']} "
                          "contradict each other; keep one.")
    packed = rows_packed(data, train.stage)
    if train.padding_free and (packed or media):
        why = "the rows are packed already (packing/neat_packing)" if packed else "multimodal rows are expanded per example"
        raise ConfigError(f"padding_free: true lays a batch's examples end to end, but {why}; remove padding_free.")
    if train.padding_free and (model.flash_attn == "disabled" or model.shift_attn or train.mixture_of_depths):
        why = ("flash_attn: disabled (eager attention) would see a row's examples as one sequence" if model.flash_attn == "disabled"
               else "shift_attn shifts attention groups across the row" if model.shift_attn
               else "mixture_of_depths routes the tokens of a row together")
        raise ConfigError(f"padding_free: true, but {why}; remove padding_free.")
    if train.early_stopping_steps is not None:
        has_eval = data.eval_dataset or data.val_size
        if not has_eval or hf.get("eval_strategy", "no") == "no":
            raise ConfigError("early_stopping_steps stops on the eval loss: give eval_dataset (or val_size) and "
                              "eval_strategy: steps (with eval_steps) or epoch.")
    if train.disable_gradient_checkpointing and checkpointing_asked(hf):
        raise ConfigError("disable_gradient_checkpointing: true and gradient_checkpointing: true contradict each other; "
                          "keep one.")
    if hf.get("do_predict"):
        if not train.predict_with_generate:
            raise ConfigError("do_predict generates answers and scores them; predict_with_generate: false is not "
                              "supported (use do_eval for the loss on eval_dataset).")
        if not stage.can_predict or not data.eval_dataset:
            predicting = " or ".join(name for name, s in STAGES.items() if s.can_predict)
            raise ConfigError(f"do_predict needs stage: {predicting} and eval_dataset: the rows whose answers are "
                              "generated and scored against their labels.")
    if data.streaming and not hf.get("max_steps"):
        raise ConfigError("streaming: true needs max_steps (the number of rows is unknown in advance).")
    stage.check(plan)

    output_dir = Path(hf["output_dir"])
    _check_writable(output_dir)
    if train.overwrite_output_dir:  # first: the most useful reason why a folder cannot be replaced
        _check_clearable(output_dir, [model.model_name_or_path, *(model.adapter_name_or_path or []),
                                      data.dataset_dir, train.reward_model])
    if resume_last:
        found = checkpoints(output_dir) if output_dir.is_dir() else []
        if not found:
            raise ConfigError(f"resume_from_checkpoint: true resumes from the last checkpoint in output_dir "
                              f"{str(output_dir)!r}, which has none. Remove the key to start a new run.")
        hf["resume_from_checkpoint"] = str(found[-1])
    from lf_train.launch import restarted

    # a worker torchrun restarted after a failure resumes the run its first attempt began, even if that one
    # was told to overwrite output_dir (torchrun's restarts would otherwise start over each time)
    overwrite = train.overwrite_output_dir and not (restarted() and checkpoints(output_dir))
    plan.resume_from_checkpoint, plan.clear_output_dir = _plan_output_dir(
        output_dir, overwrite, hf.get("resume_from_checkpoint"))
    if plan.resume_from_checkpoint:
        check_resumable(plan, read_run_config(output_dir))
    return plan


def rows_packed(data: Any, stage: str) -> bool:
    """Whether the rows are packed: `packing` (neat_packing sets it) when given, else stage pt packs."""
    return data.packing if data.packing is not None else stage == "pt"


# The keys that replace AdamW with an optimizer of their own: (why adapters cannot use it: "" when they
# can, None when it needs finetuning_type full; the module it imports; the lf-train extra that installs it).
OWN_OPTIMIZERS: dict[str, tuple[str | None, str | None, str | None]] = {
    "use_galore": ("projects the gradients of full weights", None, None),
    "use_apollo": ("scales the gradients of full weights", "apollo_torch", "apollo"),
    "use_adam_mini": ("partitions full weight matrices by head and neuron", "adam_mini", "adam-mini"),
    "use_badam": (None, "badam", "badam"),
    "use_muon": ("", None, None),
}


def _check_optimizer_choice(train: TrainArguments, finetuning: FinetuningArguments, hf: dict[str, Any]) -> None:
    """One rule set for every key that picks the optimizer (TrainArguments refuses two at once)."""
    for key, (why, module, extra) in OWN_OPTIMIZERS.items():
        if not getattr(train, key):
            continue
        if why is None and finetuning.finetuning_type != "full":
            raise ConfigError(f"{key} trains blocks of the full weights; use finetuning_type: full.")
        if why and finetuning.finetuning_type in ADAPTER_TYPES:
            raise ConfigError(f"{key} {why}; use finetuning_type: full or freeze (LoRA already trains low-rank "
                              "matrices).")
        if "optim" in hf:
            raise ConfigError(f"{key} chooses the optimizer itself; remove `optim`.")
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key} needs the {module.replace('_', '-')} package: pip install 'lf-train[{extra}]'.")
    for method in ("galore", "apollo"):
        if getattr(train, f"use_{method}") and getattr(train, f"{method}_layerwise") \
                and hf.get("gradient_accumulation_steps", 1) > 1:
            raise ConfigError(f"{method}_layerwise updates during the backward pass: gradient_accumulation_steps "
                              "must be 1.")
    if train.use_badam and train.badam_mode == "ratio" and hf.get("deepspeed"):
        raise ConfigError("badam_mode: ratio does not work with DeepSpeed; use badam_mode: layer.")
    if train.use_apollo and hf.get("deepspeed"):
        raise ConfigError("use_apollo does not work with DeepSpeed (it steps its own optimizer); drop deepspeed.")


def parse_train_config(config: dict[str, Any], source: str = "") -> TrainPlan:
    """`check_train_config`, then `finish_plan`: the whole plan, no weights loaded."""
    return finish_plan(check_train_config(config, source))


def finish_plan(plan: TrainPlan) -> TrainPlan:
    """What needs torch but no weights: the FSDP check, precision and the TrainingArguments."""
    from transformers import TrainingArguments

    from lf_models.precision import choose_precision

    if plan.training_args is not None:
        return plan
    model, train, hf = plan.model, plan.train, plan.hf
    wants_fsdp = hf.get("fsdp") or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    if wants_fsdp and not _has_accelerator():
        raise ConfigError("FSDP shards a model over GPUs; on a CPU accelerate would run it as plain DDP. Use "
                          "`deepspeed: examples/deepspeed/ds_z3_config.json` (ZeRO-3 runs on CPUs) or drop fsdp.")
    if getattr(train, "use_vllm", False) and not _has_cuda():
        raise ConfigError("use_vllm: vLLM generates on CUDA GPUs and this machine has none; remove use_vllm "
                          "(GRPO then generates with transformers).")
    if hf.get("use_liger_kernel"):
        _check_liger()
    precision = choose_precision(hf.get("bf16"), hf.get("fp16")) if not model.pure_bf16 else None
    hf_config = {**HF_DEFAULTS, **hf}
    if precision is not None:
        hf_config.update(bf16=precision.bf16, fp16=precision.fp16)
    if model.pure_bf16:  # the weights are bf16 themselves: no autocast, no fp32 master copy
        hf_config.update(bf16=False, fp16=False)
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),  # transformers 5 warns on the old names
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if old in hf_config:
            value = hf_config.pop(old)
            hf_config.setdefault(new, value)
    hf_config["activation_checkpointing"] = uses_checkpointing(hf, train)
    if hf_config["activation_checkpointing"]:
        given = hf_config.get("activation_checkpointing_kwargs") or {}
        given = json.loads(given) if isinstance(given, str) else dict(given)
        given.setdefault("use_reentrant", bool(train.use_reentrant_gc))  # LF's default: non-reentrant (torch's advice)
        hf_config["activation_checkpointing_kwargs"] = given
    if train.use_swanlab:
        _use_swanlab(train, hf_config)
    if train.disable_shuffling:
        hf_config["train_sampling_strategy"] = "sequential"
    if train.early_stopping_steps is not None:
        hf_config.setdefault("metric_for_best_model", "eval_loss")
    if train.fp8:
        _check_fp8(train)
    if train.warmup_ratio is not None:
        hf_config["warmup_steps"] = train.warmup_ratio
    if train.use_galore:  # transformers' GaLore integration; the target modules are set once the model is loaded
        hf_config["optim"] = "galore_adamw_layerwise" if train.galore_layerwise else "galore_adamw"
        hf_config["optim_args"] = (f"rank={train.galore_rank},update_proj_gap={train.galore_update_interval},"
                                   f"scale={train.galore_scale},proj_type={train.galore_proj_type}")
        hf_config["optim_target_modules"] = ["placeholder"]
    if "use_cpu" not in hf and not _has_accelerator():
        hf_config["use_cpu"] = True  # what makes accelerate pick gloo for processes started by torchrun on a CPU
    plan.training_args = build_section(TrainingArguments, hf_config)
    _check_report_to(plan.training_args.report_to)
    check_lora_target(model, plan.finetuning)
    return plan


def _use_swanlab(train: TrainArguments, hf_config: dict[str, Any]) -> None:
    """LlamaFactory's swanlab_* keys: report_to swanlab, and the settings swanlab reads from the environment."""
    reports = hf_config.get("report_to") or []
    reports = [reports] if isinstance(reports, str) else list(reports)
    hf_config["report_to"] = [r for r in reports if r != "none"] + ([] if "swanlab" in reports else ["swanlab"])
    settings = {"SWANLAB_PROJECT": train.swanlab_project, "SWANLAB_WORKSPACE": train.swanlab_workspace,
                "SWANLAB_MODE": train.swanlab_mode, "SWANLAB_API_KEY": train.swanlab_api_key,
                "SWANLAB_LOG_DIR": train.swanlab_logdir}
    for name, value in settings.items():
        if value is not None:
            os.environ[name] = value
    if train.swanlab_run_name and not hf_config.get("run_name"):
        hf_config["run_name"] = train.swanlab_run_name


def _check_fp8(train: TrainArguments) -> None:
    """FP8 matmuls need FP8 units: NVIDIA compute capability 8.9 (Ada) or newer."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("fp8: true trains with FP8 matrix units, which need an NVIDIA GPU of compute capability "
                          "8.9 or newer (Ada, Hopper, Blackwell); this machine has no CUDA GPU. Remove fp8.")
    capability = torch.cuda.get_device_capability()
    if capability < (8, 9):
        raise ConfigError(f"fp8: true needs an NVIDIA GPU of compute capability 8.9 or newer; this one is "
                          f"{capability[0]}.{capability[1]} ({torch.cuda.get_device_name()}). Use bf16: true instead.")
    os.environ["ACCELERATE_MIXED_PRECISION"] = "fp8"  # accelerate's Accelerator reads these
    if train.fp8_backend != "auto":
        os.environ["ACCELERATE_FP8_BACKEND"] = train.fp8_backend.upper()


def _check_writable(output_dir: Path) -> None:
    """Write a probe into the nearest folder that exists (a read-only mount or /proc fails here, not
    after the model has loaded)."""
    import tempfile

    folder = output_dir.expanduser().absolute()
    while not folder.exists():
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"output_dir {str(output_dir)!r} cannot be written ({folder}: {err.strerror}); choose a "
                          "folder on a writable disk.") from None


def _check_report_to(report_to: list[str]) -> None:
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    missing = [name for name in report_to if name in INTEGRATION_TO_CALLBACK
               and name not in get_available_reporting_integrations()]
    if missing:
        raise ConfigError(f"report_to names {', '.join(missing)}, which is not installed here: pip install "
                          f"{' '.join(missing)}, or report_to: none.")


def _check_liger() -> None:
    """Liger's kernels are Triton kernels: without the package or a GPU the Trainer would fail only once
    the weights have loaded."""
    from transformers.utils import is_liger_kernel_available

    if not is_liger_kernel_available():
        raise ConfigError("use_liger_kernel: true needs liger-kernel (`pip install lf-train[liger]`, CUDA or ROCm "
                          "GPUs); install it or remove use_liger_kernel (LF's fused loss already saves the logits).")
    if not _has_accelerator():
        raise ConfigError("use_liger_kernel: Liger's kernels are Triton kernels for GPUs and this machine has none; "
                          "remove use_liger_kernel (on a CPU LF computes the loss without logits by itself).")


def _has_accelerator() -> bool:
    import torch

    return torch.accelerator.is_available()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _plan_output_dir(output_dir: Path, overwrite: bool, resume: str | None) -> tuple[str | None, bool]:
    """(checkpoint to resume from, whether to clear output_dir first)."""
    if resume is not None:
        if not Path(resume).is_dir():
            raise ConfigError(f"resume_from_checkpoint {resume!r} is not a checkpoint folder.")
        return resume, False
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        if output_dir.exists() and not output_dir.is_dir():
            raise ConfigError(f"output_dir {str(output_dir)!r} is a file; choose a folder path.")
        return None, False
    leftovers = {p.name for p in output_dir.iterdir()} - set(RUN_FILES)
    found = checkpoints(output_dir)
    looks_like_a_run = (output_dir / RESOLVED_CONFIG).is_file() or found or not leftovers
    if overwrite:
        if not looks_like_a_run:
            raise ConfigError(f"output_dir {str(output_dir)!r} is not an LF run (no {RESOLVED_CONFIG}) and holds "
                              f"{', '.join(sorted(leftovers)[:3])}...; overwrite_output_dir would delete all of it. "
                              "Choose another output_dir, or empty that folder yourself.")
        return None, True
    if (output_dir / FINISHED_MARKER).is_file():
        raise ConfigError(f"output_dir {str(output_dir)!r} already holds a finished run. Choose another "
                          "output_dir, or set overwrite_output_dir=true to replace it.")
    if found:
        return str(found[-1]), False
    if leftovers:
        raise ConfigError(f"output_dir {str(output_dir)!r} holds files that are not an LF run "
                          f"({', '.join(sorted(leftovers)[:3])}...). Choose an empty folder, or set "
                          "overwrite_output_dir=true to replace its contents.")
    return None, True  # a run that stopped before its first checkpoint: start it again


def check_resumable(plan: TrainPlan, saved: dict[str, Any]) -> None:
    """Compare the config with the one the checkpoint's run saved, before anything loads: keys that
    make the checkpoint unusable stop the run; schedule keys warn; the rest is logged."""
    if not saved:
        return
    new = {**{k: v for s in plan.sections() for k, v in dataclasses.asdict(s).items()},
           **plan.hf}
    changed = {key: (saved[key], new[key]) for key in new
               if key in saved and saved[key] != new[key] and key not in ("resume_from_checkpoint", "overwrite_output_dir")}
    breaking = [key for key in RESUME_BREAKING if key in changed]
    if breaking:
        details = "; ".join(f"{key}: {changed[key][0]!r} there, {changed[key][1]!r} now" for key in breaking)
        raise ConfigError(f"output_dir {plan.hf['output_dir']!r} holds a checkpoint of another run ({details}). "
                          "Choose another output_dir, or set overwrite_output_dir=true to start over.")
    for key in RESUME_SCHEDULE:
        if key in changed:
            logger.warning("resuming with %s=%r (the checkpoint was trained with %r): the saved learning-rate "
                           "schedule and step count continue", key, changed[key][1], changed[key][0])
    others = sorted(set(changed) - set(RESUME_SCHEDULE))
    if others:
        logger.info("resuming with changed keys: %s", ", ".join(others))


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
    for section in plan.sections():
        config.update(dataclasses.asdict(section))
    hf = plan.training_args.to_dict()
    for key in section_keys(type(plan.training_args)):
        if key in hf:
            config[key] = hf[key]
    config["resume_from_checkpoint"] = None
    return config


def describe_plan(plan: TrainPlan) -> list[str]:
    """What the run would do, in a few lines (`lf train --check`)."""
    from lf_data.run_folder import resolve_template
    from lf_models.default_template import default_template

    model, data, output_dir = plan.model, plan.data, plan.hf["output_dir"]
    template = resolve_template(data.template, model.adapter_name_or_path, default_template(model.model_name_or_path))
    if plan.resume_from_checkpoint:
        action = f"resume from {plan.resume_from_checkpoint}"
    elif plan.clear_output_dir:
        action = "replace what is there"
    else:
        action = "a new run"
    lines = [f"stage {plan.train.stage}, {plan.finetuning.finetuning_type} tuning of {model.model_name_or_path}"
             + (f" (+ adapters {', '.join(model.adapter_name_or_path)})" if model.adapter_name_or_path else ""),
             f"data {', '.join(data.dataset or [])} from {data.dataset_dir}, template {template or 'auto'}, "
             f"cutoff_len {data.cutoff_len}",
             f"output_dir {output_dir}: {action}"]
    args = plan.training_args
    if args is not None:
        lines.append(f"batch {args.per_device_train_batch_size} x {args.gradient_accumulation_steps} accumulation, "
                     f"learning rate {args.learning_rate:g}, "
                     + (f"{args.max_steps} steps" if args.max_steps > 0 else f"{args.num_train_epochs:g} epochs"))
    return lines
