"""Supervised fine-tuning: next-token loss on the assistant tokens of conversations."""

from __future__ import annotations

from typing import Any

from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from lf_data.supervised import IGNORE_INDEX


def run_sft(model: Any, tokenizer: Any, train_dataset: Any, training_args: TrainingArguments,
            callbacks: list, resume_from_checkpoint: str | None) -> Trainer:
    collator = DataCollatorForSeq2Seq(
        tokenizer=tokenizer,
        label_pad_token_id=IGNORE_INDEX,
        pad_to_multiple_of=8 if training_args.bf16 or training_args.fp16 else None,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    return trainer
