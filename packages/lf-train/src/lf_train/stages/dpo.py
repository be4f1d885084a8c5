"""Preference optimisation: DPO and its variants on chosen/rejected pairs (`pref_loss`).

`sigmoid` (DPO), `hinge` and `ipo` compare the policy with a reference model; with LoRA the
reference is the same base model with the adapter switched off, so no second copy of the weights
exists. `orpo` and `simpo` need no reference. Batches hold the n chosen examples first and the n
rejected last.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from lf_data.processors import IGNORE_INDEX
from lf_train.args import TrainArguments
from lf_train.collators import PairwiseCollator
from lf_train.plan import TrainPlan
from lf_train.stages.common import build_trainer, train_and_save

REFERENCE_FREE = ("orpo", "simpo")


def needs_reference(train: TrainArguments) -> bool:
    return train.pref_loss not in REFERENCE_FREE


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, mean) of the log-probabilities of each row's label tokens (next-token shifted)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    token_logps = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    total = (token_logps * mask).sum(-1)
    return total, total / mask.sum(-1).clamp(min=1)


def preference_loss(kind: str, beta: float, policy: tuple[torch.Tensor, torch.Tensor],
                    reference: tuple[torch.Tensor, torch.Tensor] | None, policy_mean: tuple[torch.Tensor, torch.Tensor],
                    gamma: float = 0.5, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair loss. `policy`/`reference`: summed log-probs of (chosen, rejected); `policy_mean`: averaged."""
    if kind == "simpo":
        return -F.logsigmoid(beta * (policy_mean[0] - policy_mean[1]) - gamma)
    if kind == "orpo":
        chosen, rejected = policy_mean
        log_odds = (chosen - rejected) - (torch.log1p(-chosen.exp()) - torch.log1p(-rejected.exp()))
        return -beta * F.logsigmoid(log_odds)
    margin = (policy[0] - reference[0]) - (policy[1] - reference[1])
    if kind == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)
    if kind == "hinge":
        return torch.relu(1 - beta * margin)
    if kind == "ipo":
        return (margin - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown pref_loss {kind!r}")


class PreferenceTrainer(Trainer):
    def __init__(self, *args: Any, train_args: Any, reference: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_args = train_args
        self.reference = reference.to(self.args.device) if reference is not None else None

    def _reference_logps(self, model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.reference is not None:
            context, ref_model = contextlib.nullcontext(), self.reference
        else:  # LoRA: the frozen base without the adapter is the reference
            unwrapped = self.accelerator.unwrap_model(model)
            context, ref_model = unwrapped.disable_adapter(), model
        with torch.no_grad(), context:
            logits = ref_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        return sequence_logps(logits, inputs["labels"])[0]

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        t = self.train_args
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        total, mean = sequence_logps(logits, inputs["labels"])
        policy, policy_mean = total.chunk(2), mean.chunk(2)
        reference = None if t.pref_loss in REFERENCE_FREE else self._reference_logps(model, inputs).chunk(2)
        losses = preference_loss(t.pref_loss, t.pref_beta, policy, reference, policy_mean, t.simpo_gamma,
                                 t.dpo_label_smoothing)
        nll = -policy_mean[0]  # language-modelling loss on the chosen answers
        if t.pref_loss == "orpo":
            losses = losses + nll
        elif t.pref_ftx:
            losses = losses + t.pref_ftx * nll
        loss = losses.mean()
        return (loss, {"logits": logits}) if return_outputs else loss


def run_dpo(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list, reference: Any = None) -> Trainer:
    plan.training_args.remove_unused_columns = False  # the pairwise columns are not the model's forward arguments
    trainer = build_trainer(PreferenceTrainer, model, tokenizer, data, plan, callbacks, PairwiseCollator,
                            train_args=plan.train, reference=reference)
    return train_and_save(trainer, plan, data)
