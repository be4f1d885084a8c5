"""`lf train`: validate the whole configuration, then load, train and save, in that order.

Every check that needs no model (keys, types, combinations, dataset names and files, template,
model path, output_dir state) runs before any weights load, and output_dir is only written
once the data is tokenised and the model is loaded, so bad input never leaves a half-made run.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from lf_data.atomic_files import share_tree, storage_error, write_yaml_atomic
from lf_data.pipeline import build_dataset
from lf_data.run_folder import LOG_FILE, LOSS_PLOT, RESOLVED_CONFIG, resolve_template
from lf_data.templates import Template, get_template, with_options
from lf_models.args import ADAPTER_TYPES, FinetuningArguments
from lf_models.loader import class_checkpointing, hub_credentials, load_model, load_tokenizer, resolve_model
from lf_models.precision import choose_precision
from lf_train.callbacks import JsonlLogCallback, plot_loss
from lf_train.losses import size_fused_head_tiles
from lf_train.plan import TrainPlan, checkpointing_asked, finish_plan, parse_train_config, resolved_config
from lf_train.stages import STAGES

__all__ = ["TrainPlan", "parse_train_config", "predict_after_training", "run_train"]
logger = logging.getLogger(__name__)


def _checkpointing_refused(class_name: str) -> Exception:
    from lf_data.config import ConfigError

    return ConfigError(f"gradient_checkpointing: true, but {class_name} does not support it; remove "
                       "gradient_checkpointing.")


def choose_checkpointing(model: Any, args: Any, asked: bool) -> None:
    """Gradient checkpointing (on by default: lf_train.plan.uses_checkpointing) where the model supports
    it; a model that does not trains without it, unless the config asked for it (refused before the
    weights load where the config names the class: `run_train`)."""
    if args.gradient_checkpointing and not getattr(model, "supports_gradient_checkpointing", False):
        if asked:
            raise _checkpointing_refused(type(model).__name__)
        args.gradient_checkpointing = args.activation_checkpointing = False  # transformers 5's name and its alias
    logger.info("gradient checkpointing: %s", "on" if args.gradient_checkpointing else "off")


def _skip_deepspeed_shm_op() -> None:
    """DeepSpeed on a CPU compiles its shared-memory all-reduce op with g++ as its process group
    starts (about a minute, once per machine and torch version), and only its inference path
    (`inference_all_reduce`) uses it; training reduces through gloo. Marking the op unavailable, in
    the table of compatible ops DeepSpeed keeps for such edits, skips the build."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def run_train(config: dict[str, Any], source: str = "", plan: TrainPlan | None = None) -> Path:
    """Check (unless `plan` is the checked config), load, train and save; returns output_dir."""
    plan = finish_plan(plan) if plan is not None else parse_train_config(config, source)
    stage = STAGES[plan.train.stage]
    args = plan.training_args
    output_dir = Path(args.output_dir)
    if plan.predict_only:
        return _predict_only(plan, output_dir)
    if args.deepspeed and args.use_cpu:
        _skip_deepspeed_shm_op()
    # join the process group now (a no-op for one process): the data step below waits for the main
    # process, and DeepSpeed ZeRO-3 partitions the weights while they load
    args._setup_devices  # noqa: B018
    if args.deepspeed and args.use_cpu and args.world_size > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")  # adopts the gloo group: ZeRO-3 needs it to load weights

    model_source = resolve_model(plan.model)
    if args.gradient_checkpointing and checkpointing_asked(plan.hf):
        known = class_checkpointing(plan.model, model_source)
        if known is not None and not known[1]:
            raise _checkpointing_refused(known[0])
    reference_source = resolve_model(_reference_args(plan)) if plan.train.ref_model else None  # a typo: now
    tokenizer = load_tokenizer(plan.model, model_source)
    template = with_options(get_template(resolve_template(plan.data.template, plan.model.adapter_name_or_path,
                                                          model_source.default_template)), plan.data)
    if isinstance(template, Template):
        tokenizer.chat_template = template.to_jinja()  # saved with the tokenizer: inference builds the same prompts
    plan.data.template = template.name
    media = _media_inputs(plan, model_source, tokenizer)
    with args.main_process_first(desc="tokenising the dataset"):  # other processes reuse its cache
        data = build_dataset(plan.data, tokenizer, plan.train.stage, template, hub=hub_credentials(plan.model),
                             media_markers=media.markers if media else None)
    if media is not None:
        from lf_models.media import check_media_files

        evaluation = data.eval_dataset
        check_media_files([data.train_dataset, *(evaluation.values() if isinstance(evaluation, dict) else [evaluation])])
        data.media = media
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
                       add_value_head=stage.value_head)
    if plan.train.use_galore:
        from lf_models.adapters import lora_targets
        from lf_train.optimizers import compact_galore_projections

        args.optim_target_modules = lora_targets(model, plan.train.galore_target)
        compact_galore_projections()
    choose_checkpointing(model, args, asked=checkpointing_asked(plan.hf) is not None)
    if args.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # frozen embeddings: checkpointed adapter layers still need input grads
    logger.info("precision: %s", "pure bf16" if plan.model.pure_bf16 else precision.describe())
    if plan.train.print_param_status and args.process_index == 0:
        for name, param in model.named_parameters():
            logger.info("%s: %s %s %s %s", name, tuple(param.shape), param.dtype, param.device,
                        "trainable" if param.requires_grad else "frozen")

    with args.main_process_first(local=False, desc="preparing output_dir"):
        if args.process_index == 0:
            if plan.clear_output_dir and output_dir.exists():
                shutil.rmtree(output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            write_yaml_atomic(output_dir / RESOLVED_CONFIG, resolved_config(plan))
    if plan.resume_from_checkpoint:
        logger.warning("resuming from %s", plan.resume_from_checkpoint)

    extra = {}
    if stage.needs_reference(plan.train) and plan.train.ref_model:
        extra["reference"] = _load_reference(plan, precision, tokenizer, reference_source)
    elif stage.needs_reference(plan.train) and plan.finetuning.finetuning_type not in ADAPTER_TYPES:  # adapters switch off instead
        extra["reference"] = load_model(plan.model, FinetuningArguments(finetuning_type="full"), precision,
                                        is_trainable=False, source=model_source, tokenizer=tokenizer,
                                        cutoff_len=plan.data.cutoff_len)
    try:
        callbacks = [JsonlLogCallback(output_dir)]
        if plan.train.early_stopping_steps is not None:
            from transformers import EarlyStoppingCallback

            callbacks.append(EarlyStoppingCallback(early_stopping_patience=plan.train.early_stopping_steps))
        if plan.profiler.enable_torch_profiler:
            from lf_train.profiling import profiler_callback

            callbacks.append(profiler_callback(plan.profiler, str(output_dir)))
        size_fused_head_tiles(args.device)
        stage.run(model, tokenizer, data, plan, callbacks, **extra)
    except OSError as err:  # a full disk mid-checkpoint: one line; the last complete checkpoint is intact
        raise storage_error(err, output_dir, "The last complete checkpoint is kept; the run resumes from it.") from None
    if args.process_index == 0:
        if media is not None:
            from lf_models.media import save_processor

            save_processor(media, output_dir)  # AutoProcessor loads the trained folder
        share_tree(output_dir)  # safetensors writes private files: let the umask decide, as for any file
        if plan.train.plot_loss:
            plot_loss(output_dir)
        if args.do_predict:
            del model, extra
            predict_after_training(plan, output_dir)
        _print_summary(output_dir, plan, model_source.path)
    return output_dir


def _media_inputs(plan: TrainPlan, source: Any, tokenizer: Any) -> Any:
    """lf_models.media.MediaInputs when the data carries images, videos or audios (None for text)."""
    from lf_data.dataset_info import media_kinds

    data = plan.data
    kinds = {kind for found in media_kinds((data.dataset or []) + (data.eval_dataset or []),
                                           data.dataset_dir).values() for kind in found}
    if not kinds:
        return None
    from lf_models.media import prepare_media

    packing = "neat" if data.neat_packing else "plain" if data.packing else "none"
    return prepare_media(plan.model, source.path, tokenizer, kinds, packing)


def _reference_args(plan: TrainPlan) -> Any:
    from lf_models.args import ModelArguments

    train = plan.train
    return ModelArguments(model_name_or_path=train.ref_model, adapter_name_or_path=train.ref_model_adapters,
                          quantization_bit=train.ref_model_quantization_bit, cache_dir=plan.model.cache_dir,
                          trust_remote_code=plan.model.trust_remote_code)


def _load_reference(plan: TrainPlan, precision: Any, tokenizer: Any, source: Any) -> Any:
    """ref_model (with ref_model_adapters merged, quantised if asked): a frozen model of its own."""
    train = plan.train
    kind = "lora" if train.ref_model_adapters or train.ref_model_quantization_bit else "full"
    logger.info("reference model: %s%s", train.ref_model,
                f" + {', '.join(train.ref_model_adapters)}" if train.ref_model_adapters else "")
    return load_model(_reference_args(plan), FinetuningArguments(finetuning_type=kind), precision, is_trainable=False,
                      source=source, tokenizer=tokenizer, cutoff_len=plan.data.cutoff_len)


def _predict_only(plan: TrainPlan, output_dir: Path) -> Path:
    """A LlamaFactory predict recipe (do_predict, eval_dataset, no dataset): score the model as given."""
    args = plan.training_args
    if args.process_index == 0:
        if plan.clear_output_dir and output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_yaml_atomic(output_dir / RESOLVED_CONFIG, resolved_config(plan))
        predict_after_training(plan, output_dir, trained=False)
        share_tree(output_dir)
    return output_dir


QUANTISATION_KEYS = ("quantization_bit", "quantization_method", "quantization_type", "double_quantization",
                     "quantization_device_map")


def predict_after_training(plan: TrainPlan, output_dir: Path, trained: bool = True) -> dict[str, Any]:
    """Answer every eval_dataset row with the trained model (or, `trained=False`, the model and adapters
    the config names) and score the answers (BLEU-4, ROUGE): the same engine and files as
    `lf eval task=predict`, written into output_dir."""
    from lf_eval.args import PREDICT_TASK, EvalArguments
    from lf_eval.predict import run_predict
    from lf_models.args import ModelArguments
    from lf_serve.args import GeneratingArguments, InferArguments, ServePlan

    adapter = plan.finetuning.finetuning_type in ADAPTER_TYPES
    if not trained:
        base, adapters = plan.model.model_name_or_path, plan.model.adapter_name_or_path
    else:
        base = plan.model.model_name_or_path if adapter else str(output_dir)
        adapters = [str(output_dir)] if adapter else None
    # an adapter is scored on the base it trained on: QLoRA's quantised one, not the full-precision weights
    quantised = {key: getattr(plan.model, key) for key in QUANTISATION_KEYS} if adapter or not trained else {}
    model = ModelArguments(model_name_or_path=base, adapter_name_or_path=adapters,
                           cache_dir=plan.model.cache_dir, model_revision=plan.model.model_revision,
                           trust_remote_code=plan.model.trust_remote_code, **quantised)
    # the training run's data keys (template, default_system, tool_format, thinking), over eval_dataset's rows
    data = dataclasses.replace(plan.data, dataset=plan.data.eval_dataset, eval_dataset=None, val_size=0.0,
                               streaming=False, packing=False, neat_packing=False, eval_on_each_dataset=False)
    batch = plan.training_args.per_device_eval_batch_size
    decoding = {"max_new_tokens": plan.train.max_new_tokens} if plan.train.max_new_tokens else {}
    if "do_sample" not in plan.generation and "temperature" not in plan.generation:
        decoding["do_sample"] = False  # scores should not depend on luck, unless the config asks to sample
    serve = ServePlan(data, model, type(plan.finetuning)(), GeneratingArguments(**decoding, **plan.generation),
                      InferArguments(max_batch_size=batch))
    args = EvalArguments(task=PREDICT_TASK, save_dir=str(output_dir), overwrite_save_dir=True, batch_size=batch)
    return run_predict(args, serve)


def _auto_class(base_path: str) -> str:
    """The transformers class a user loads the result with (image-text-to-text for most VLMs)."""
    from transformers import AutoConfig

    from lf_models.families import model_class_for

    try:
        return model_class_for(AutoConfig.from_pretrained(base_path)).__name__
    except (OSError, ValueError):
        return "AutoModelForCausalLM"


def _print_summary(output_dir: Path, plan: TrainPlan, base_path: str) -> None:
    adapter = plan.finetuning.finetuning_type in ADAPTER_TYPES
    what = f"{ {'lora': 'LoRA', 'oft': 'OFT'}[plan.finetuning.finetuning_type]} adapter" if adapter else "model"
    auto = _auto_class(base_path)
    lines = [
        "",
        f"Done. The {what} is in {output_dir}/ with the tokenizer and its chat template,",
        f"the resolved config ({RESOLVED_CONFIG}), the training log ({LOG_FILE})"
        + (f" and the loss curve ({LOSS_PLOT})." if plan.train.plot_loss else "."),
        "",
        "Use it from Python (plain transformers + peft):",
        f"  from transformers import {auto}, AutoTokenizer",
    ]
    if adapter:
        lines += [
            "  from peft import PeftModel",
            f"  model = {auto}.from_pretrained({base_path!r})",
            f"  model = PeftModel.from_pretrained(model, {str(output_dir)!r})",
        ]
    else:
        lines.append(f"  model = {auto}.from_pretrained({str(output_dir)!r})")
    lines += [
        f"  tokenizer = AutoTokenizer.from_pretrained({str(output_dir)!r})",
        "  ids = tokenizer.apply_chat_template([{'role': 'user', 'content': 'Who are you?'}],",
        "                                      add_generation_prompt=True, return_tensors='pt', return_dict=True)",
        "  out = model.generate(**ids, max_new_tokens=64)",
        "  print(tokenizer.decode(out[0][ids['input_ids'].shape[1]:], skip_special_tokens=True))",
    ]
    if adapter:
        lines += ["", "Or merge it into one standalone model (safetensors + Ollama Modelfile, or GGUF):",
                  f"  lf export adapter_name_or_path={output_dir} export_dir=<folder> [export_format=gguf]"]
    print("\n".join(lines))
