"""Supervised fine-tuning: next-token loss on the assistant tokens of conversations (or, with
use_dft_loss / use_asft_loss / use_eaft_loss, a token-weighted variant from `lf_train.losses`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.integrations import is_deepspeed_zero3_enabled

from lf_train.collators import SupervisedCollator
from lf_train.fused_head import add_fused_head, choose_fused_head
from lf_train.losses import asft_loss, sft_loss_func
from lf_train.padding_free import choose_padding_free
from lf_train.plan import TrainPlan
from lf_train.stages.common import build_trainer, reference_logits, train_and_save

PISSA_INIT = "pissa_init"


class SupervisedTrainer(Trainer):
    """The Trainer with LF's sft losses: DFT and EAFT through `compute_loss_func`; ASFT also runs the
    frozen starting model on each batch (a loaded reference, or with LoRA the base with the adapter off)."""

    def __init__(self, *args: Any, train_args: Any, reference: Any = None, **kwargs: Any) -> None:
        if train_args.use_asft_loss:
            kwargs["compute_loss_func"] = self._asft_loss
        else:
            kwargs["compute_loss_func"] = sft_loss_func(train_args)
        super().__init__(*args, **kwargs)
        plain_loss = self.compute_loss_func is None and self.label_smoother is None and not self.args.use_liger_kernel
        sharded = self.is_fsdp_enabled or is_deepspeed_zero3_enabled()
        self.fused_lm_head = choose_fused_head(train_args.fused_lm_head, self.args.device, self.model, sharded) \
            if plain_loss else None
        if self.fused_lm_head:
            add_fused_head(self.fused_lm_head, self.model)
        self.asft_alpha = train_args.asft_alpha
        self.report_perplexity = train_args.stage == "pt"
        self.reference = reference.to(self.args.device).eval() if reference is not None else None
        self._reference_logits: torch.Tensor | None = None

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if self.compute_loss_func == self._asft_loss:
            self._reference_logits = reference_logits(self, model, inputs)
        elif self.fused_lm_head and model.training and not return_outputs:
            inputs = {**inputs, "fused_lm_head": True}  # the same loss, without the whole logits
        try:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        finally:
            self._reference_logits = None

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        """Stage pt adds `{prefix}_perplexity` = exp(`{prefix}_loss`) (LlamaFactory's pt workflow does the
        same), here so that every evaluation logs it: eval_on_start, eval_strategy and the final one."""
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        if self.report_perplexity and f"{prefix}_loss" in output.metrics:
            output.metrics[f"{prefix}_perplexity"] = perplexity(output.metrics[f"{prefix}_loss"])
        return output

    def _asft_loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        return asft_loss(outputs["logits"], self._reference_logits, labels, num_items_in_batch, self.asft_alpha)


def perplexity(loss: float) -> float:
    """exp(mean token loss); math.inf when that overflows a float (a diverged run)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def next_token_argmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keep only what token accuracy needs while evaluating (the argmax, not the vocabulary-wide logits)."""
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=-1)


def token_accuracy(prediction: Any) -> dict[str, float]:
    """compute_accuracy: share of answer tokens (labels != -100) whose next-token argmax is right."""

    predicted, labels = prediction.predictions[:, :-1], prediction.label_ids[:, 1:]
    mask = labels != -100
    return {"accuracy": float((predicted[mask] == labels[mask]).mean()) if mask.any() else float("nan")}


def run_sft(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list, reference: Any = None) -> Trainer:
    metrics = ({"compute_metrics": token_accuracy, "preprocess_logits_for_metrics": next_token_argmax}
               if plan.train.compute_accuracy else {})
    options = {"neat_packing": plan.data.neat_packing, "padding_free": choose_padding_free([model, reference], plan, data)}
    trainer = build_trainer(SupervisedTrainer, model, tokenizer, data, plan, callbacks, SupervisedCollator,
                            collator_options=options, train_args=plan.train, reference=reference, **metrics)
    output_dir = Path(plan.training_args.output_dir)
    if plan.finetuning.pissa_convert and not plan.resume_from_checkpoint:
        model.save_pretrained(output_dir / PISSA_INIT)  # the starting point the conversion subtracts

    def convert_pissa() -> None:  # rewrite the adapter for the original base, not PiSSA's residual one
        model.save_pretrained(output_dir, path_initial_model_for_weight_conversion=str(output_dir / PISSA_INIT))

    return train_and_save(trainer, plan, data, convert_pissa if plan.finetuning.pissa_convert else None)
