"""KTO: single answers marked desirable or undesirable, no pairs needed (Ethayarajh et al., 2024), with
TRL's loss code.

`KTOTrainer` is TRL's, whose loss step (`KTOTrainer._compute_loss`: `kto` and `apo_zero_unpaired`,
`kto_loss`) runs unchanged on LF's batches. Each answer's reward is its log-probability ratio to the
reference; `kto` pushes desirable rewards above, and undesirable ones below, a reference point: the
KL between policy and reference, estimated from answers paired with prompts they do not belong to
(lf-data's `kl_*` columns, which keep their own row's media). With LoRA the reference is the base
with the adapter switched off. TRL computes the KL pairs' log-probabilities before the answers'.

Logged as in TRL: `rewards/chosen` and `rewards/rejected` (mean reward of the desirable and of the
undesirable answers), `rewards/margins` (their difference), `logps/chosen`, `logps/rejected`, `kl`,
`logits/chosen`, `logits/rejected`, `entropy`, `num_tokens`. There is no `rewards/accuracies`: the
answers are not paired.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, TrainingArguments
from trl import KTOConfig
from trl import KTOTrainer as TRLKTOTrainer

from lf_train.collators import KTOCollator
from lf_train.padding_free import choose_padding_free
from lf_train.plan import TrainPlan
from lf_train.stages.common import build_trainer, train_and_save
from lf_train.stages.dpo import TRLPreferenceMixin, _answer_logps, _Recorder, _trl_batch, trl_config


def kto_config(args: TrainingArguments, train: Any) -> KTOConfig:
    """TRL's KTOConfig: LF's TrainingArguments and the kto keys under TRL's names."""
    return trl_config(KTOConfig, args, beta=train.pref_beta, loss_type=train.kto_loss,
                      desirable_weight=train.kto_chosen_weight, undesirable_weight=train.kto_rejected_weight,
                      precompute_ref_log_probs=False, disable_dropout=False)


class KTOTrainer(TRLPreferenceMixin, TRLKTOTrainer):
    """TRL's KTOTrainer on LF's batches and reference; the KL pairs are LF's `kl_` rows."""

    _lf_kl: dict[str, Any] | None = None

    def __init__(self, *args: Any, train_args: Any, reference: Any = None, **kwargs: Any) -> None:
        kwargs["args"] = kto_config(kwargs["args"], train_args)
        Trainer.__init__(self, *args, **kwargs)  # not TRL's (see lf_train.stages.dpo)
        config = self.args
        self.beta, self.loss_type = config.beta, config.loss_type
        self.desirable_weight, self.undesirable_weight = config.desirable_weight, config.undesirable_weight
        self.calculate_KL = config.loss_type != "apo_zero_unpaired"
        self._lf_setup(train_args, reference, ("log_probs", "entropy", "mean_logits"))

    def _compute_kl_logps(self, model: Any, batch: dict[str, Any]) -> torch.Tensor | None:
        """Summed answer log-probabilities of LF's `kl_` rows (their own ids, masks and media)."""
        if not self.calculate_KL:
            return None
        kl = self._lf_kl
        model = model.inner if isinstance(model, _Recorder) else model  # pref_ftx reads the answers' forward
        labels = kl["labels"].masked_fill(kl["completion_mask"] == 0, -100)
        inputs = {key: value for key, value in kl.items() if key not in ("completion_mask", "labels")}
        with torch.no_grad():
            outputs = self._forward(model)(**inputs, labels=labels, use_cache=False, fused_lm_head=True)
        return _answer_logps(outputs, kl["completion_mask"])[0]

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        batch = {**_trl_batch(inputs), "label": inputs["kto_tags"]}
        self._lf_kl = {**_trl_batch(inputs, "kl_"), "labels": inputs["kl_input_ids"]}
        policy = _Recorder(self._forward(model))
        try:
            labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
            kwargs = {key: value for key, value in batch.items() if key not in ("completion_mask", "label")}
            with self._as_reference() as reference:  # first, as dpo's (TRLPreferenceMixin._as_reference)
                batch["ref_KL_logps"] = self._compute_kl_logps(reference, batch)
                outputs = self._forward(reference)(**kwargs, labels=labels, use_cache=False, fused_lm_head=True)
                batch["ref_logps"] = _answer_logps(outputs, batch["completion_mask"])[0]
            self.precompute_ref_logps = True
            loss = TRLKTOTrainer.compute_loss(self, policy, batch)  # TRL's loss step
        finally:
            self._lf_kl, self.precompute_ref_logps = None, False
        ftx = self.train_args.pref_ftx
        if ftx:  # the summed log-probability of each desirable answer, over all answers of the batch
            total = _answer_logps(policy.outputs, batch["completion_mask"])[0]
            loss = loss + ftx * torch.where(batch["label"], -total, torch.zeros_like(total)).mean()
        return (loss, {}) if return_outputs else loss


def run_kto(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list, reference: Any = None) -> Trainer:
    plan.training_args.remove_unused_columns = False
    padding_free = choose_padding_free([model, reference], plan, data)
    trainer = build_trainer(KTOTrainer, model, tokenizer, data, plan, callbacks, KTOCollator,
                            train_args=plan.train, reference=reference)
    trainer.padding_free = padding_free
    return train_and_save(trainer, plan, data)
