"""What every Trainer-based stage does around its own loss: the optimizer choice and the closing
sequence (train, save, metrics, state, evaluation)."""

from __future__ import annotations

from typing import Any

from lf_train.checkpoints import atomic_checkpoints
from lf_train.collators import MediaCollator, forward_inputs
from lf_train.optimizers import (
    adam_mini_optimizer,
    apollo_optimizer,
    badam_optimizer,
    loraplus_optimizer,
    muon_optimizer,
)
from lf_train.plan import TrainPlan


def custom_optimizer(model: Any, plan: TrainPlan) -> Any:
    """LoRA+, BAdam, Muon, APOLLO or Adam-mini when asked for; None lets the Trainer build the one
    `optim` names (GaLore too, through transformers' own integration)."""
    if plan.train.use_badam:
        return badam_optimizer(model, plan.training_args, plan.train)
    if plan.train.use_muon:
        return muon_optimizer(model, plan.training_args)
    if plan.train.use_apollo:
        return apollo_optimizer(model, plan.training_args, plan.train)
    if plan.train.use_adam_mini:
        return adam_mini_optimizer(model, plan.training_args)
    ratio = plan.finetuning.loraplus_lr_ratio
    return loraplus_optimizer(model, plan.training_args, ratio, plan.finetuning.loraplus_lr_embedding) if ratio else None


def _import_deepspeed_only_when_used() -> None:
    """accelerate's `unwrap_model` imports deepspeed, wherever it is installed, to test whether the model is a
    DeepSpeedEngine: 25 MB of RSS and 0.3 s in every run. No model can be one unless deepspeed was imported
    (a DeepSpeed run imports it before the Trainer exists), so the test asks that instead."""
    import sys

    import accelerate.utils.other as other

    other.is_deepspeed_available = lambda: "deepspeed" in sys.modules


def build_trainer(trainer_class: Any, model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list,
                  collator_class: Any, collator_options: dict[str, Any] | None = None, **extra: Any) -> Any:
    """A Trainer (or subclass) over the stage's data, collator and LF's optimizer choice, saving
    checkpoints atomically."""
    from transformers.trainer_callback import PrinterCallback

    from lf_data.cli import show_progress

    args = plan.training_args
    _import_deepspeed_only_when_used()
    if plan.train.mixture_of_depths:  # before the optimizer is built: the routers are trained too
        from lf_train.mixture_of_depths import prepare_mixture_of_depths

        prepare_mixture_of_depths(model, plan.train.mixture_of_depths, plan.model.model_name_or_path)
    collator = collator_class(pad_token_id=tokenizer.pad_token_id,
                              pad_to_multiple_of=8 if args.bf16 or args.fp16 else None, **(collator_options or {}))
    if getattr(data, "media", None) is not None:  # images, videos, audios: expanded and processed per batch
        from lf_models.media import rope_index_function

        collator = MediaCollator(collator, data.media, rope_index_function(model) if data.media.rope_index else None)
        args.remove_unused_columns = False  # the media columns are read by the collator, not the model
    trainer = atomic_checkpoints(trainer_class)(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        optimizers=(custom_optimizer(model, plan), None),
        **extra,
    )
    if not show_progress():  # LF_VERBOSITY=quiet: no per-step dicts either (trainer_log.jsonl keeps them)
        trainer.remove_callback(PrinterCallback)
    return trainer


def train_and_save(trainer: Any, plan: TrainPlan, data: Any, before_save: Any = None) -> Any:
    result = trainer.train(resume_from_checkpoint=plan.resume_from_checkpoint)
    if plan.train.include_effective_tokens_per_second:
        result.metrics["effective_tokens_per_sec"] = effective_tokens_per_second(data.train_dataset, result.metrics)
    trainer.save_model()
    if before_save is not None:
        before_save()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if data.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    return trainer


def effective_tokens_per_second(dataset: Any, metrics: dict[str, float]) -> float:
    """Real (non-padding) tokens trained per second over all epochs: the dataset's tokens times the
    epochs trained, over the training time (LlamaFactory's include_effective_tokens_per_second)."""
    if not hasattr(dataset, "__len__") or "input_ids" not in dataset.column_names:
        return float("nan")  # streaming: the number of tokens is unknown in advance
    tokens = sum(len(ids) for ids in dataset["input_ids"])
    return tokens * metrics.get("epoch", 1.0) / max(metrics.get("train_runtime", 0.0), 1e-9)


def reference_logits(trainer: Any, model: Any, inputs: dict[str, Any]) -> Any:
    """Logits of the frozen reference on `inputs`, without gradients: the loaded reference model when
    the stage has one (`trainer.reference`), else the policy with its adapter switched off (LoRA/OFT:
    the base weights are the starting model, so no second copy exists)."""
    import contextlib

    import torch

    if trainer.reference is not None:
        context, ref_model = contextlib.nullcontext(), trainer.reference
    else:
        context, ref_model = trainer.accelerator.unwrap_model(model).disable_adapter(), model
    with torch.no_grad(), context:
        return ref_model(**forward_inputs(inputs)).logits
