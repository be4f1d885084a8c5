"""`lf train`: validate the whole configuration, then load, train and save, in that order.

Every check that needs no model (keys, types, combinations, dataset names and files, template,
model path, output_dir state) runs before any weights load, and output_dir is only written
once the data is tokenised and the model is loaded, so bad input never leaves a half-made run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lf_data.args import DataArguments
from lf_data.config import build_section, section_keys, unknown_keys_error, write_config_atomic
from lf_data.dataset_info import get_dataset_attr
from lf_data.errors import ConfigError
from lf_data.pipeline import build_dataset, check_stage_data
from lf_data.templates import Template, get_template
from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.loader import load_model, load_tokenizer, resolve_model
from lf_models.precision import choose_precision
from lf_train.args import TrainArguments
from lf_train.callbacks import LOG_FILE, LOSS_PLOT, JsonlLogCallback, plot_loss
from lf_train.checkpoints import STAGING_DIR
from lf_train.stages import STAGES, VALUE_HEAD_STAGES
from lf_train.stages.dpo import REFERENCE_FREE

logger = logging.getLogger(__name__)
RESOLVED_CONFIG = "lf_config.yaml"
TENSORBOARD_DIR = "runs"  # report_to: tensorboard writes here unless TENSORBOARD_LOGGING_DIR says otherwise
FINISHED_MARKER = "train_results.json"
LF_SECTIONS = (DataArguments, ModelArguments, FinetuningArguments, TrainArguments)
# Defaults LF prefers over the Hugging Face ones (a user's value always wins).
HF_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "logging_steps": 5,
    "save_steps": 100,
    "include_num_input_tokens_seen": "all",
    "save_total_limit": 3,
}


@dataclasses.dataclass
class TrainPlan:
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

    hf_keys = set(section_keys(TrainingArguments))
    known = hf_keys.union(*(section_keys(s) for s in LF_SECTIONS))
    unknown = [key for key in config if key not in known]
    if unknown:
        raise unknown_keys_error(unknown, known, f" in {source}" if source else "", config)
    data, model, finetuning, train = (build_section(s, config) for s in LF_SECTIONS)

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
        if train.galore_layerwise and config.get("gradient_accumulation_steps", 1) > 1:
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
    if train.stage == "ppo" and finetuning.finetuning_type != "lora":
        raise ConfigError("stage ppo shares one base model between policy, reference and reward adapters; "
                          "it needs finetuning_type: lora.")
    if train.stage == "ppo" and not config.get("max_steps"):
        raise ConfigError("stage ppo needs max_steps (the number of PPO steps to take).")
    if config.get("do_predict"):
        if not train.predict_with_generate:
            raise ConfigError("do_predict generates answers and scores them; predict_with_generate: false is not "
                              "supported (use do_eval for the loss on eval_dataset).")
        if train.stage not in ("sft", "pt") or not data.eval_dataset:
            raise ConfigError("do_predict needs stage: sft and eval_dataset: the rows whose answers are generated "
                              "and scored against their labels.")
    if data.streaming and not config.get("max_steps"):
        raise ConfigError("streaming: true needs max_steps (the number of rows is unknown in advance).")

    precision = choose_precision(config.get("bf16"), config.get("fp16")) if not model.pure_bf16 else None
    hf_config = {**HF_DEFAULTS, **{k: v for k, v in config.items() if k in hf_keys}}
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

    resume, clear = _plan_output_dir(Path(training_args.output_dir), train.overwrite_output_dir,
                                     training_args.resume_from_checkpoint)
    if clear:
        _check_clearable(Path(training_args.output_dir), [model.model_name_or_path, *(model.adapter_name_or_path or []),
                                                           data.dataset_dir, train.reward_model])
    return TrainPlan(data, model, finetuning, train, training_args, resume, clear)


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
    leftovers = {p.name for p in output_dir.iterdir()} - {RESOLVED_CONFIG, LOG_FILE, LOSS_PLOT, STAGING_DIR, TENSORBOARD_DIR}
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


def run_train(config: dict[str, Any], source: str = "") -> Path:
    plan = parse_train_config(config, source)
    args = plan.training_args
    output_dir = Path(args.output_dir)
    # join the process group now (a no-op for one process): the data step below waits for the main
    # process, and DeepSpeed ZeRO-3 partitions the weights while they load
    args._setup_devices  # noqa: B018
    if args.deepspeed and args.use_cpu and args.world_size > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")  # adopts the gloo group: ZeRO-3 needs it to load weights

    model_source = resolve_model(plan.model)
    tokenizer = load_tokenizer(plan.model, model_source)
    if plan.data.template is None and model_source.default_template:
        plan.data.template = model_source.default_template
    template = get_template(plan.data.template)
    if isinstance(template, Template):
        tokenizer.chat_template = template.to_jinja()  # saved with the tokenizer: inference builds the same prompts
    plan.data.template = template.name
    with args.main_process_first(desc="tokenising the dataset"):  # other processes reuse its cache
        data = build_dataset(plan.data, tokenizer, plan.train.stage, template)
    if not plan.data.streaming:
        report = data.report
        logger.info("data: %s rows read, %d invalid, %d dropped, %d examples to train on (template %s, cutoff_len %d, "
                    "cache %s)", report.rows_read, report.invalid, report.dropped, len(data.train_dataset),
                    template.name, plan.data.cutoff_len, report.cache)

    precision = choose_precision(args.bf16, args.fp16)  # already resolved by parse_train_config
    from transformers import set_seed

    set_seed(args.seed)  # adapter initialisation is random: seed it, or equal configs give different runs
    model = load_model(plan.model, plan.finetuning, precision, is_trainable=True, source=model_source,
                       tokenizer=tokenizer, cutoff_len=plan.data.cutoff_len,
                       add_value_head=plan.train.stage in VALUE_HEAD_STAGES)
    if plan.train.use_galore:
        from lf_models.adapters import lora_targets

        args.optim_target_modules = lora_targets(model, plan.train.galore_target)
    if args.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # frozen embeddings: checkpointed adapter layers still need input grads
    logger.info("precision: %s", "pure bf16" if plan.model.pure_bf16 else precision.describe())

    with args.main_process_first(local=False, desc="preparing output_dir"):
        if args.process_index == 0:
            if plan.clear_output_dir and output_dir.exists():
                shutil.rmtree(output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            write_config_atomic(output_dir / RESOLVED_CONFIG, resolved_config(plan))
    if plan.resume_from_checkpoint:
        logger.warning("resuming from %s", plan.resume_from_checkpoint)

    extra = {}
    needs_reference = plan.train.stage == "kto" or (plan.train.stage == "dpo"
                                                    and plan.train.pref_loss not in REFERENCE_FREE)
    if needs_reference and plan.finetuning.finetuning_type != "lora":  # LoRA switches its adapter off instead
        extra["reference"] = load_model(plan.model, FinetuningArguments(finetuning_type="full"), precision,
                                        is_trainable=False, source=model_source, tokenizer=tokenizer,
                                        cutoff_len=plan.data.cutoff_len)
    STAGES[plan.train.stage](model, tokenizer, data, plan, [JsonlLogCallback(output_dir)], **extra)
    if args.process_index == 0:
        if plan.train.plot_loss:
            plot_loss(output_dir)
        if args.do_predict:
            del model, extra
            predict_after_training(plan, config, output_dir)
        _print_summary(output_dir, plan, model_source.path)
    return output_dir


def predict_after_training(plan: TrainPlan, config: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Answer every eval_dataset row with the trained model and score the answers (BLEU-4, ROUGE):
    the same engine and files as `lf eval task=predict`, written into output_dir."""
    from lf_eval import run_eval

    trained = {"adapter_name_or_path": str(output_dir)} if plan.finetuning.finetuning_type == "lora" \
        else {"model_name_or_path": str(output_dir)}
    predict_config = {
        "model_name_or_path": plan.model.model_name_or_path, "template": plan.data.template,
        "dataset": plan.data.eval_dataset, "dataset_dir": plan.data.dataset_dir, "cutoff_len": plan.data.cutoff_len,
        "max_samples": plan.data.max_samples, "task": "predict", "save_dir": str(output_dir),
        "overwrite_save_dir": True, "batch_size": plan.training_args.per_device_eval_batch_size,
        "trust_remote_code": plan.model.trust_remote_code, **trained,
    }
    for key in ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty"):
        if key in config:  # generation settings of the run apply to its predictions
            predict_config[key] = config[key]
    return run_eval(predict_config, source="do_predict")


def _print_summary(output_dir: Path, plan: TrainPlan, base_path: str) -> None:
    what = "LoRA adapter" if plan.finetuning.finetuning_type == "lora" else "model"
    lines = [
        "",
        f"Done. The {what} is in {output_dir}/ with the tokenizer and its chat template,",
        f"the resolved config ({RESOLVED_CONFIG}), the training log ({LOG_FILE})"
        + (f" and the loss curve ({LOSS_PLOT})." if plan.train.plot_loss else "."),
        "",
        "Use it from Python (plain transformers + peft):",
        "  from transformers import AutoModelForCausalLM, AutoTokenizer",
    ]
    if plan.finetuning.finetuning_type == "lora":
        lines += [
            "  from peft import PeftModel",
            f"  model = AutoModelForCausalLM.from_pretrained({base_path!r})",
            f"  model = PeftModel.from_pretrained(model, {str(output_dir)!r})",
        ]
    else:
        lines.append(f"  model = AutoModelForCausalLM.from_pretrained({str(output_dir)!r})")
    lines += [
        f"  tokenizer = AutoTokenizer.from_pretrained({str(output_dir)!r})",
        "  ids = tokenizer.apply_chat_template([{'role': 'user', 'content': 'Who are you?'}],",
        "                                      add_generation_prompt=True, return_tensors='pt', return_dict=True)",
        "  out = model.generate(**ids, max_new_tokens=64)",
        "  print(tokenizer.decode(out[0][ids['input_ids'].shape[1]:], skip_special_tokens=True))",
    ]
    if plan.finetuning.finetuning_type == "lora":
        lines += ["", "Or merge it into one standalone model (safetensors + Ollama Modelfile, or GGUF):",
                  f"  lf export adapter_name_or_path={output_dir} export_dir=<folder> [export_format=gguf]"]
    print("\n".join(lines))
