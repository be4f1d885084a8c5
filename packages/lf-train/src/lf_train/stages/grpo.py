"""GRPO: reinforcement learning with verifiable rewards on groups of sampled completions, on TRL's
`GRPOTrainer` (Shao et al., 2024; the loss variants Dr. GRPO, DAPO, BNPO, GSPO... are TRL's `loss_type`
and `importance_sampling_level`).

LF's side: the prompts are rendered by LF's template (the same ids as every other stage, cut to
cutoff_len), the reference answer of each row reaches the rewards as `solution`, the model arrives
loaded (LoRA: TRL's reference is the adapter switched off, no second copy), checkpoints are atomic
and `trainer_log.jsonl` gets the rewards (`rewards/mean`, `rewards/<name>/mean`) and `kl` per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import TrainingArguments
from trl import GRPOConfig, GRPOTrainer

from lf_train.callbacks import JsonlLogCallback
from lf_train.checkpoints import atomic_checkpoints
from lf_train.plan import TrainPlan
from lf_train.reward_models import POLICY, REWARD, left_pad, load_reward_model
from lf_train.rewards import MODEL_REWARD, load_rewards
from lf_train.stages.common import custom_optimizer, train_and_save

PROMPT_IDS = "prompt_ids"
"""The column holding LF's prompt ids; TRL's own `prompt` column is their text (for rewards and logs)."""
GRPO_KEYS = ("num_generations", "max_completion_length", "beta", "epsilon", "epsilon_high", "num_iterations",
             "scale_rewards", "loss_type", "importance_sampling_level", "mask_truncated_completions",
             "reward_weights", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "vllm_tensor_parallel_size",
             "vllm_enable_sleep_mode", "vllm_server_base_url", "vllm_server_host", "vllm_server_port",
             "vllm_server_timeout")
"""LF keys passed to GRPOConfig under the same name."""


class LFGRPOTrainer(GRPOTrainer):
    """GRPOTrainer generating from LF's prompt ids instead of re-tokenising the prompt text, and saving
    only the policy's adapter when an rm adapter is loaded beside it (reward_model_type: lora)."""

    _lf_prompt_ids: list[list[int]] | None = None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._lf_prompt_ids = [list(row[PROMPT_IDS]) for row in inputs]
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._lf_prompt_ids = None

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict[str, Any]]:
        if self._lf_prompt_ids is None or len(self._lf_prompt_ids) != len(prompts):
            return super()._tokenize_prompts(prompts)
        return self._lf_prompt_ids, None, {}

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if REWARD not in getattr(model, "peft_config", {}):
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:  # every process calls _save; one writes (two would race on the files)
            return None
        output_dir = output_dir or self.args.output_dir
        model.save_pretrained(output_dir, selected_adapters=[POLICY])
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        return None


def model_reward(scorer: Any, model: Any, pad_token_id: int) -> Any:
    """The reward model as a TRL reward function: each prompt's LF ids + its completion's ids, scored at
    the last real token (`lf_train.reward_models`)."""
    def reward_model(prompts: list, completions: list, completion_ids: list, **kwargs: Any) -> list[float]:
        rows = [list(prompt) + list(completion) for prompt, completion in
                zip(kwargs[PROMPT_IDS], completion_ids, strict=True)]
        ids, mask = left_pad(rows, pad_token_id)
        device = next(model.parameters()).device
        return scorer.reward(ids.to(device), mask.to(device)).float().tolist()

    return reward_model


class GRPOLogCallback(JsonlLogCallback):
    """trainer_log.jsonl with TRL's total reward (`reward`, `reward_std`) as `rewards/mean`, `rewards/std`."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs:
            logs = {**logs, **{f"rewards/{name}": logs[key] for key, name in (("reward", "mean"), ("reward_std", "std"))
                               if key in logs}}
        super().on_log(args, state, control, logs=logs, **kwargs)


def grpo_config(plan: TrainPlan) -> GRPOConfig:
    """LF's resolved TrainingArguments plus the grpo keys, as TRL's GRPOConfig."""
    args, train = plan.training_args, plan.train
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainingArguments)
              if field.init and hasattr(args, field.name)}
    values.update({key: getattr(train, key) for key in GRPO_KEYS})
    generation = plan.generation  # sampling keys shared with do_predict (temperature, top_p, top_k, ...)
    values.update(temperature=generation.get("temperature", 1.0), top_p=generation.get("top_p", 1.0),
                  top_k=generation.get("top_k", 0), repetition_penalty=generation.get("repetition_penalty", 1.0),
                  remove_unused_columns=False,  # the dataset's other columns reach the rewards
                  generation_kwargs={"use_cache": True},  # training models load with use_cache off: generation
                  # would recompute the whole sequence for every new token
                  trust_remote_code=plan.model.trust_remote_code, disable_dropout=True)
    return GRPOConfig(**values)


def to_trl_dataset(dataset: Any, tokenizer: Any) -> Any:
    """LF's tokenised prompts (`input_ids`, reference answer in `labels`) -> TRL's columns: `prompt`
    (the rendered prompt text), `solution` (the reference answer text, "" if none) and LF's ids."""
    def convert(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {"prompt": tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=False),
                "solution": [text.strip() for text in tokenizer.batch_decode(batch["labels"], skip_special_tokens=True)],
                PROMPT_IDS: batch["input_ids"]}

    if dataset is None:
        return None
    if isinstance(dataset, dict):
        return {name: to_trl_dataset(part, tokenizer) for name, part in dataset.items()}
    return dataset.map(convert, batched=True, remove_columns=list(dataset.column_names))


def run_grpo(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list) -> Any:
    t = plan.train
    scorer = None
    if MODEL_REWARD in (t.reward_funcs or []):
        scorer = model_reward(load_reward_model(t.reward_model_type, t.reward_model, tokenizer, peft=model,
                                                device=plan.training_args.device), model, tokenizer.pad_token_id)
    rewards = load_rewards(t.reward_funcs or [], plan.model.trust_remote_code, scorer)
    config = grpo_config(plan)
    plan.training_args = config  # what the closing sequence and the checkpoints read
    callbacks = [GRPOLogCallback(callback.path.parent) if type(callback) is JsonlLogCallback else callback
                 for callback in callbacks]
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"  # generation pads prompts on the left
    data.train_dataset = to_trl_dataset(data.train_dataset, tokenizer)
    data.eval_dataset = to_trl_dataset(data.eval_dataset, tokenizer)
    trainer = atomic_checkpoints(LFGRPOTrainer)(
        model=model, reward_funcs=rewards, args=config, train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset, processing_class=tokenizer, callbacks=callbacks,
        optimizers=(custom_optimizer(model, plan), None))
    from transformers.trainer_callback import PrinterCallback

    from lf_data.cli import show_progress

    if not show_progress():
        trainer.remove_callback(PrinterCallback)
    return train_and_save(trainer, plan, data)
