"""KTO: single answers marked desirable or undesirable, no pairs needed (Ethayarajh et al., 2024).

Each answer's reward is its log-probability ratio to the reference model; the loss pushes desirable
rewards above, and undesirable ones below, a reference point: the KL between policy and reference,
estimated from answers paired with prompts they do not belong to (lf-data's `kl_*` columns). With
LoRA the reference is the base with the adapter switched off.

Logged as in TRL: `rewards/chosen` and `rewards/rejected` (mean reward of the desirable and of the
undesirable answers), `rewards/margins` (their difference), `logps/chosen`, `logps/rejected` and `kl`.
There is no `rewards/accuracies`: the answers are not paired.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from lf_train.collators import KTOCollator, forward_inputs
from lf_train.plan import TrainPlan
from lf_train.stages.common import build_trainer, train_and_save
from lf_train.stages.dpo import PreferenceTrainer, sequence_logps


def kto_loss(log_ratio: torch.Tensor, kl: torch.Tensor, desirable: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """Per-example loss: 1 - sigmoid(beta * (r - KL)) when desirable, 1 - sigmoid(beta * (KL - r)) if not."""
    good = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - log_ratio)))
    return torch.where(desirable, good, bad)


class KTOTrainer(PreferenceTrainer):
    def _logps(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return sequence_logps(model(**forward_inputs(batch)).logits, batch["labels"])[0]

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        t = self.train_args
        policy = self._logps(model, inputs)
        kl_batch = {**forward_inputs(inputs, "kl_"), "labels": inputs["kl_labels"]}
        with torch.no_grad():
            policy_kl = self._logps(model, kl_batch)
        reference = self._reference_logps(model, inputs)
        reference_kl = self._reference_logps(model, kl_batch)
        kl = (policy_kl - reference_kl).mean().clamp(min=0).detach()
        tags = inputs["kto_tags"]
        rewards = t.pref_beta * (policy - reference)
        self.store_metrics(model, {"rewards/chosen": rewards[tags], "rewards/rejected": rewards[~tags],
                                   "logps/chosen": policy[tags], "logps/rejected": policy[~tags], "kl": kl[None]})
        losses = kto_loss(policy - reference, kl, inputs["kto_tags"], t.pref_beta, t.kto_chosen_weight,
                          t.kto_rejected_weight)
        if t.pref_ftx:
            losses = losses + t.pref_ftx * torch.where(inputs["kto_tags"], -policy, torch.zeros_like(policy))
        loss = losses.mean()
        return (loss, {}) if return_outputs else loss


def run_kto(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list, reference: Any = None) -> Trainer:
    plan.training_args.remove_unused_columns = False
    trainer = build_trainer(KTOTrainer, model, tokenizer, data, plan, callbacks, KTOCollator,
                            train_args=plan.train, reference=reference)
    return train_and_save(trainer, plan, data)
