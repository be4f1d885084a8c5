"""Supervised fine-tuning: next-token loss on the assistant tokens of conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer

from lf_train.collators import SupervisedCollator
from lf_train.optimizers import loraplus_optimizer

PISSA_INIT = "pissa_init"


def run_sft(model: Any, tokenizer: Any, data: Any, plan: Any, callbacks: list) -> Trainer:
    args, finetuning = plan.training_args, plan.finetuning
    collator = SupervisedCollator(
        pad_token_id=tokenizer.pad_token_id,
        pad_to_multiple_of=8 if args.bf16 or args.fp16 else None,
        neat_packing=plan.data.neat_packing,
    )
    optimizer = loraplus_optimizer(model, args, finetuning.loraplus_lr_ratio) if finetuning.loraplus_lr_ratio else None
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        optimizers=(optimizer, None),
    )
    output_dir = Path(args.output_dir)
    if finetuning.pissa_convert and not plan.resume_from_checkpoint:
        model.save_pretrained(output_dir / PISSA_INIT)  # the starting point the conversion subtracts
    result = trainer.train(resume_from_checkpoint=plan.resume_from_checkpoint)
    trainer.save_model()
    if finetuning.pissa_convert:
        # rewrite the adapter so that it applies to the original base model, not PiSSA's residual one
        model.save_pretrained(output_dir, path_initial_model_for_weight_conversion=str(output_dir / PISSA_INIT))
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if data.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    return trainer
