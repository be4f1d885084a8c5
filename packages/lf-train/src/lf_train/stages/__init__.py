"""Training stages, one readable file each, registered here under the same `stage:` names as their
data side (`lf_data.stages.DATA_STAGES`; a test checks the two registries match).

Adding a stage: its data entry in lf-data (or an existing processor reused), one file here with its
`run_*` function, and one `Stage` entry below (with its config rules, if it has any). This module
imports no torch: the rules run when a config is checked, and a stage's file is imported only when
it trains.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lf_data.errors import ConfigError
from lf_train.args import REFERENCE_FREE_LOSSES

if TYPE_CHECKING:
    from lf_train.args import TrainArguments
    from lf_train.plan import TrainPlan


def _no_rules(plan: TrainPlan) -> None:
    return None


def _never(train: TrainArguments) -> bool:
    return False


@dataclass(frozen=True)
class Stage:
    name: str
    runner: str
    """`module:function` that trains and saves into output_dir:
    (model, tokenizer, data, plan, callbacks[, reference=])."""
    value_head: bool = False
    """The model carries a scalar value head (reward models, PPO's value estimates)."""
    needs_reference: Callable[[TrainArguments], bool] = _never
    """Whether a frozen reference model is needed (LoRA switches its adapter off instead of loading one)."""
    can_predict: bool = False
    """do_predict can generate answers for eval_dataset after training."""
    check: Callable[[TrainPlan], None] = _no_rules
    """The stage's own rules, checked with the rest of the config before anything heavy is imported."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)(*args, **kwargs)


def _check_ppo(plan: TrainPlan) -> None:
    if plan.finetuning.finetuning_type != "lora":
        raise ConfigError("stage ppo shares one base model between policy, reference and reward adapters; "
                          "it needs finetuning_type: lora.")
    if plan.hf.get("max_steps", -1) <= 0:
        raise ConfigError("stage ppo needs max_steps (optimizer steps; a rollout lasts ppo_epochs x ppo_buffer_size "
                          "of them).")
    if not plan.train.reward_model:
        raise ConfigError("stage ppo needs reward_model: the output_dir of an `lf train stage=rm` run.")
    data = plan.data
    if data.eval_dataset or data.val_size or plan.hf.get("eval_strategy", "no") != "no":
        raise ConfigError("stage ppo does not evaluate (its score is the reward logged per step); remove "
                          "eval_dataset, val_size and eval_strategy.")
    if data.streaming:
        raise ConfigError("stage ppo samples prompts in rollouts from a dataset of known size; remove streaming: true.")


def _check_grpo(plan: TrainPlan) -> None:
    """What TRL's GRPOTrainer would refuse after loading (or that cannot work), refused now."""
    from lf_data.dataset_info import media_kinds
    from lf_train.rewards import MODEL_REWARD, check_reward_names

    train, hf, data = plan.train, plan.hf, plan.data
    check_reward_names(train.reward_funcs or [], train.reward_weights, plan.model.trust_remote_code)
    from lf_train.launch import planned_processes

    processes = planned_processes()  # counting GPUs imports torch when NPROC_PER_NODE is unset
    batch = hf.get("per_device_train_batch_size", 8)
    generation_batch = batch * processes * hf.get("gradient_accumulation_steps", 1)
    if generation_batch % train.num_generations:
        raise ConfigError(f"stage grpo samples num_generations={train.num_generations} completions per prompt, so "
                          f"per_device_train_batch_size ({batch}) x processes ({processes}) x "
                          f"gradient_accumulation_steps must be a multiple of it; change one of them.")
    evaluating = data.eval_dataset or data.val_size or hf.get("do_eval")
    if evaluating and hf.get("eval_strategy", "no") != "no" and \
            hf.get("per_device_eval_batch_size", 8) * processes % train.num_generations:
        raise ConfigError(f"stage grpo evaluates groups of num_generations={train.num_generations}: "
                          "per_device_eval_batch_size x processes must be a multiple of it.")
    if train.epsilon_high is not None and train.epsilon_high < train.epsilon:
        raise ConfigError(f"epsilon_high ({train.epsilon_high}) is the upper clipping range; it cannot be below "
                          f"epsilon ({train.epsilon}).")
    if hf.get("auto_find_batch_size"):
        raise ConfigError("stage grpo needs whole groups of num_generations in every batch; remove "
                          "auto_find_batch_size and set per_device_train_batch_size.")
    if train.use_vllm:
        _check_vllm()
    scored = MODEL_REWARD in (train.reward_funcs or [])
    if scored and not train.reward_model:
        raise ConfigError("reward_funcs: reward_model scores with a reward model; set reward_model to the output_dir "
                          "of an `lf train stage=rm` run (or an `lf api` reward server's URL with "
                          "reward_model_type: api).")
    if train.reward_model and not scored:
        raise ConfigError("stage grpo reads reward_model only through reward_funcs; add reward_model to "
                          "reward_funcs (with a weight in reward_weights if you give weights).")
    if scored and train.reward_model_type == "lora" and plan.finetuning.finetuning_type != "lora":
        raise ConfigError("reward_model_type: lora loads the rm adapter beside the policy's on one base model, "
                          "which needs finetuning_type: lora; use reward_model_type: full or api.")
    media = media_kinds((data.dataset or []) + (data.eval_dataset or []), data.dataset_dir)
    if media:
        name, kinds = next(iter(media.items()))
        raise ConfigError(f"dataset {name!r} has {' and '.join(kinds)}; stage grpo trains on text prompts only "
                          "for now. Remove the media column(s) from its entry in dataset_info.json.")


def _check_vllm() -> None:
    """use_vllm needs vLLM installed (checked without importing it; the GPU check needs torch and is
    finish_plan's)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("use_vllm: vLLM is not installed; pip install 'lf-train[vllm]' (or remove use_vllm).")


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("pt", "lf_train.stages.sft:run_sft", can_predict=True),  # the sft loop on packed plain text
    Stage("sft", "lf_train.stages.sft:run_sft", can_predict=True, needs_reference=lambda t: t.use_asft_loss),
    Stage("rm", "lf_train.stages.rm:run_rm", value_head=True),
    Stage("dpo", "lf_train.stages.dpo:run_dpo", needs_reference=lambda t: t.pref_loss not in REFERENCE_FREE_LOSSES),
    Stage("kto", "lf_train.stages.kto:run_kto", needs_reference=lambda t: True),
    Stage("ppo", "lf_train.stages.ppo:run_ppo", value_head=True, check=_check_ppo),
    # TRL's GRPOTrainer builds the reference itself: LoRA switches the adapter off, full tuning loads a copy
    Stage("grpo", "lf_train.stages.grpo:run_grpo", check=_check_grpo),
)}

__all__ = ["STAGES", "Stage"]
