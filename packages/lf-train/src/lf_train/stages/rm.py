"""Reward modelling: a value head learns to score the chosen answer above the rejected one.

Batches hold the n chosen examples first and the n rejected ones last; the reward of a sequence is
the value at its last real token, and the loss is -log sigmoid(r_chosen - r_rejected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from lf_train.collators import PairwiseCollator, forward_inputs
from lf_train.plan import TrainPlan
from lf_train.stages.common import build_trainer, train_and_save


def last_token_values(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The value at each row's last non-padding position (right padding)."""
    last = attention_mask.long().sum(dim=1) - 1
    return values.gather(1, last.clamp(min=0).unsqueeze(1)).squeeze(1)


class PairwiseTrainer(Trainer):
    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        _, values = model(**forward_inputs(inputs))
        rewards = last_token_values(values, inputs["attention_mask"])
        chosen, rejected = rewards.chunk(2)
        loss = -F.logsigmoid(chosen - rejected).mean()
        if return_outputs:
            return loss, {"chosen_rewards": chosen, "rejected_rewards": rejected}
        return loss

    def prediction_step(self, model: Any, inputs: dict[str, torch.Tensor], prediction_loss_only: bool,
                        ignore_keys: Any = None) -> tuple:
        with torch.no_grad():
            loss, out = self.compute_loss(model, inputs, return_outputs=True)
        scores = torch.stack([out["chosen_rewards"], out["rejected_rewards"]], dim=1)
        return loss.detach(), scores.detach(), torch.zeros(len(scores), dtype=torch.long)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        # checkpoints hold the inner model's own files (which the Trainer knows how to load) + the head
        super()._load_from_checkpoint(resume_from_checkpoint, model=self.model.pretrained_model)
        self.model.load_value_head(resume_from_checkpoint)

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        # the adapter (or full weights) in its standard format, plus value_head.safetensors next to it
        if not self.args.should_save:  # every process calls _save; one writes (two would race on the files)
            return
        output_dir = Path(output_dir or self.args.output_dir)
        self.model.pretrained_model.save_pretrained(output_dir)
        self.model.save_value_head(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)


def pairwise_accuracy(prediction: Any) -> dict[str, float]:
    scores = prediction.predictions
    return {"accuracy": float((scores[:, 0] > scores[:, 1]).mean())}


def run_rm(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list) -> Trainer:
    plan.training_args.remove_unused_columns = False  # the pairwise columns are not the model's forward arguments
    trainer = build_trainer(PairwiseTrainer, model, tokenizer, data, plan, callbacks, PairwiseCollator,
                            compute_metrics=pairwise_accuracy)
    return train_and_save(trainer, plan, data)
