"""Preference optimisation: DPO and its variants on chosen/rejected pairs (`pref_loss`).

`sigmoid` (DPO), `hinge` and `ipo` compare the policy with a reference model; with LoRA the
reference is the same base model with the adapter switched off, so no second copy of the weights
exists. `orpo` and `simpo` need no reference. Batches hold the n chosen examples first and the n
rejected last.

Every logging step also reports what preference training is judged by, under TRL's names:
`rewards/chosen`, `rewards/rejected` (beta times the log-probability ratio to the reference; beta
times the mean log-probability without one), `rewards/margins` (chosen - rejected),
`rewards/accuracies` (share of pairs whose chosen reward is higher) and `logps/chosen`,
`logps/rejected` (the log-probabilities the loss compares), with `eval_` in front during evaluation.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from lf_data.processors import IGNORE_INDEX
from lf_train.args import REFERENCE_FREE_LOSSES
from lf_train.collators import PairwiseCollator, forward_inputs
from lf_train.plan import TrainPlan
from lf_train.stages.common import build_trainer, reference_logits, train_and_save


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
        # split -> metric -> [sum, count] since the last log (micro-batches and processes together)
        self._metric_sums: dict[str, dict[str, list[float]]] = {"train": defaultdict(lambda: [0.0, 0.0]),
                                                                 "eval": defaultdict(lambda: [0.0, 0.0])}

    def store_metrics(self, model: Any, values: dict[str, torch.Tensor]) -> None:
        """Add per-example values to the averages the next `log()` reports; sums and counts are added
        over processes, so a metric that has no example in some batch (KTO) is still a true mean."""
        split = "train" if model.training else "eval"
        with torch.no_grad():
            stats = torch.stack([torch.stack([v.detach().float().sum(), v.new_tensor(float(v.numel()))])
                                 for v in values.values()])
            stats = self.accelerator.gather(stats[None].float()).sum(0).tolist()
        for key, (total, count) in zip(values, stats, strict=True):
            self._metric_sums[split][key][0] += total
            self._metric_sums[split][key][1] += count

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the stored preference metrics to a training or an evaluation log, as TRL does."""
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train" if "loss" in logs else None
        if split is not None:
            prefix = "eval_" if split == "eval" else ""
            means = {key: total / count for key, (total, count) in self._metric_sums[split].items() if count}
            if "rewards/chosen" in means and "rewards/rejected" in means:
                means["rewards/margins"] = means["rewards/chosen"] - means["rewards/rejected"]
            logs.update({prefix + key: value for key, value in sorted(means.items())})
            self._metric_sums[split].clear()
        super().log(logs, start_time)

    def _reference_logps(self, model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return sequence_logps(reference_logits(self, model, inputs), inputs["labels"])[0]

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        t = self.train_args
        logits = model(**forward_inputs(inputs)).logits
        total, mean = sequence_logps(logits, inputs["labels"])
        policy, policy_mean = total.chunk(2), mean.chunk(2)
        reference = None if t.pref_loss in REFERENCE_FREE_LOSSES else self._reference_logps(model, inputs).chunk(2)
        losses = preference_loss(t.pref_loss, t.pref_beta, policy, reference, policy_mean, t.simpo_gamma,
                                 t.dpo_label_smoothing)
        if reference is None:
            chosen, rejected = policy_mean
            rewards = (t.pref_beta * chosen, t.pref_beta * rejected)
        else:
            chosen, rejected = policy
            rewards = (t.pref_beta * (chosen - reference[0]), t.pref_beta * (rejected - reference[1]))
        self.store_metrics(model, {"rewards/chosen": rewards[0], "rewards/rejected": rewards[1],
                                   "rewards/accuracies": (rewards[0] > rewards[1]).float(),
                                   "logps/chosen": chosen, "logps/rejected": rejected})
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
