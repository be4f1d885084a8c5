"""Supervised fine-tuning: next-token loss on the assistant tokens of conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer

from lf_train.collators import SupervisedCollator
from lf_train.plan import TrainPlan
from lf_train.stages.common import build_trainer, train_and_save

PISSA_INIT = "pissa_init"


def run_sft(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list) -> Trainer:
    trainer = build_trainer(Trainer, model, tokenizer, data, plan, callbacks, SupervisedCollator,
                            collator_options={"neat_packing": plan.data.neat_packing})
    output_dir = Path(plan.training_args.output_dir)
    if plan.finetuning.pissa_convert and not plan.resume_from_checkpoint:
        model.save_pretrained(output_dir / PISSA_INIT)  # the starting point the conversion subtracts

    def convert_pissa() -> None:  # rewrite the adapter for the original base, not PiSSA's residual one
        model.save_pretrained(output_dir, path_initial_model_for_weight_conversion=str(output_dir / PISSA_INIT))

    return train_and_save(trainer, plan, data, convert_pissa if plan.finetuning.pissa_convert else None)
