"""Supervised fine-tuning: next-token loss on the assistant tokens of conversations."""

from __future__ import annotations

from typing import Any

from transformers import Trainer, TrainingArguments

from lf_train.collators import SupervisedCollator


def run_sft(model: Any, tokenizer: Any, data: Any, training_args: TrainingArguments, callbacks: list,
            resume_from_checkpoint: str | None, neat_packing: bool = False) -> Trainer:
    collator = SupervisedCollator(
        pad_token_id=tokenizer.pad_token_id,
        pad_to_multiple_of=8 if training_args.bf16 or training_args.fp16 else None,
        neat_packing=neat_packing,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if data.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    return trainer
