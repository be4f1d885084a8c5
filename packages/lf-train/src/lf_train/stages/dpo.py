"""Preference optimisation on chosen/rejected pairs (`pref_loss`), with TRL's loss code.

The losses are TRL's own: `PreferenceTrainer` is TRL's `DPOTrainer`, and its loss step
(`DPOTrainer._compute_loss`: every `loss_type`, `loss_weights`, f-divergences, `ld_alpha`, WPO
weighting, router aux loss) runs unchanged on LF's batches. ORPO and SimPO/CPO, which need no
reference model, take TRL's `ORPOTrainer.odds_ratio_loss` and `CPOTrainer.cpo_loss` on the same
log-probabilities. TRL's `__init__` is not run: it would re-tokenise LF's data, copy a LoRA adapter
as a "ref" adapter and build its own reference. LF keeps its side:

- batches from LF's tokenised pairs, the n chosen rows first and the n rejected last (TRL's layout
  too), through `PairwiseCollator` (and `MediaCollator` for images, videos and audio);
- the reference: with LoRA/OFT the same base model with the adapter switched off (one copy of the
  weights), else the `ref_model` (or frozen copy) LF loaded;
- atomic checkpoints (`build_trainer`), no TRL model card;
- `pref_ftx`: LlamaFactory's extra language-modelling loss, the mean negative log-probability per
  chosen answer, read from the log-probabilities TRL's forward already computed.

LlamaFactory's `sigmoid` with `dpo_label_smoothing` is conservative DPO, which TRL 1.x no longer has
as such: it is TRL's sigmoid and robust losses weighted (1 + 2e, -2e), robust at label smoothing 1/4
(the sum is exactly (1 - e) * sigmoid(margin) + e * sigmoid(-margin)).

Logged per step under TRL's names: `rewards/chosen`, `rewards/rejected`, `rewards/margins`,
`rewards/accuracies`, `logps/chosen`, `logps/rejected`, and (DPO losses) `logits/chosen`,
`logits/rejected`, `entropy`, `mean_token_accuracy`, `num_tokens`; (ORPO) `nll_loss`,
`log_odds_ratio`, `log_odds_chosen`; with `eval_` in front during evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import torch
from transformers import Trainer, TrainingArguments
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import add_fused_lm_head

from lf_data.errors import ConfigError
from lf_data.processors import IGNORE_INDEX
from lf_train.args import REFERENCE_FREE_LOSSES
from lf_train.collators import PairwiseCollator, forward_inputs
from lf_train.padding_free import EndToEnd, branches_allowed, choose_padding_free
from lf_train.plan import TrainPlan
from lf_train.stages.common import build_trainer, train_and_save

CDPO_ROBUST_SMOOTHING = 0.25
"""The robust loss's label smoothing in LF's conservative-DPO sum (any value in (0, 0.5) is exact)."""


def trl_config(config_class: type, args: TrainingArguments, **values: Any) -> Any:
    """LF's resolved TrainingArguments as one of TRL's config classes, with its own `values`."""
    fields = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainingArguments)
              if field.init and hasattr(args, field.name)}
    if fields.get("use_liger_kernel"):  # Liger's fused cross-entropy would replace TRL's fused LM head
        fields["liger_kernel_config"] = {**(fields.get("liger_kernel_config") or {}),
                                         "fused_linear_cross_entropy": False}
    return config_class(**fields, **values)


def dpo_loss_types(train: Any) -> tuple[list[str], list[float] | None, float]:
    """TRL's (loss_type, loss_weights, label_smoothing) for LF's preference keys."""
    if train.pref_losses:
        return list(train.pref_losses), train.pref_loss_weights, train.dpo_label_smoothing
    if train.pref_loss == "sigmoid" and train.dpo_label_smoothing:
        # robust(s) = sigmoid - s/(1-2s) * beta * margin and cDPO(e) = sigmoid + e * beta * margin (both per pair)
        ratio = train.dpo_label_smoothing * (1 - 2 * CDPO_ROBUST_SMOOTHING) / CDPO_ROBUST_SMOOTHING
        weight = train.pref_loss_weights[0] if train.pref_loss_weights else 1.0
        return ["sigmoid", "robust"], [weight * (1 + ratio), -weight * ratio], CDPO_ROBUST_SMOOTHING
    return [train.pref_loss], train.pref_loss_weights, train.dpo_label_smoothing


def dpo_config(args: TrainingArguments, train: Any) -> DPOConfig:
    """TRL's DPOConfig: LF's TrainingArguments and the preference keys under TRL's names."""
    loss_type, loss_weights, label_smoothing = dpo_loss_types(train)
    return trl_config(DPOConfig, args, beta=train.pref_beta, loss_type=loss_type, loss_weights=loss_weights,
                      label_smoothing=label_smoothing, ld_alpha=train.ld_alpha,
                      f_divergence_type=train.f_divergence_type,
                      f_alpha_divergence_coef=train.f_alpha_divergence_coef, use_weighting=train.use_weighting,
                      discopop_tau=train.discopop_tau, precompute_ref_log_probs=False, disable_dropout=False)


def _base_model(model: Any) -> Any:
    from accelerate.utils import is_peft_model

    return model.get_base_model() if is_peft_model(model) else model


class _Recorder:
    """The policy model, keeping its last forward's outputs: pref_ftx reads the log-probabilities TRL's
    loss step computed instead of running the model again."""

    def __init__(self, model: Any) -> None:
        self.inner, self.outputs = model, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.outputs = self.inner(*args, **kwargs)
        return self.outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _trl_batch(inputs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """LF's batch (one sequence group) in TRL's form: the model's inputs plus `completion_mask`."""
    return {**forward_inputs(inputs, prefix), "completion_mask": (inputs[f"{prefix}labels"] != IGNORE_INDEX).long()}


def _answer_logps(outputs: Any, completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, mean) of each row's answer-token log-probabilities, from a fused-LM-head forward."""
    mask = completion_mask[:, 1:]
    total = outputs.log_probs[:, -mask.size(1):].sum(-1)
    return total, total / mask.sum(-1).clamp(min=1)


class TRLPreferenceMixin:
    """LF's changes to TRL's DPO and KTO trainers, shared: set-up without TRL's `__init__`, LF's
    reference (its forwards run before the policy's), padding-free forwards, evaluation on LF's
    datasets as they are, checkpoints without a model card."""

    padding_free = False
    """The stage's choice (lf_train.padding_free): each forward runs its batch as one padding-free row."""
    pairs = False
    """The batches are chosen/rejected pairs whose shared prompts a padding-free row computes once."""

    def _forward(self, model: Any) -> Any:
        if self.padding_free and not isinstance(model, EndToEnd):
            return EndToEnd(model, pairs=self.pairs)
        return model

    @contextlib.contextmanager
    def _as_reference(self) -> Any:
        """The reference, for forwards without gradients: the same model with its LoRA/OFT adapter
        switched off, or the reference model; TRL's loss step then reads the log-probabilities as
        precomputed (`precompute_ref_logps`), so the reference's memory is free before the policy's
        graph is built (TRL would run it after)."""
        from trl.models.utils import disable_gradient_checkpointing

        # TRL switches checkpointing with transformers' old method names, which warn (not the user's doing)
        warnings.filterwarnings("ignore", r"`gradient_checkpointing_(dis|en)able` is deprecated", FutureWarning)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                base = _base_model(unwrapped)
                policy_forward = base.forward
                base.forward = self._reference_forward
                try:
                    with unwrapped.disable_adapter():
                        yield self.model
                finally:
                    base.forward = policy_forward
            else:
                yield self.ref_model

    def _lf_setup(self, train_args: Any, reference: Any, outputs: tuple[str, ...]) -> None:
        from accelerate.utils import is_peft_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        model = self.model
        self.train_args = train_args
        if is_peft_model(model) and isinstance(model.get_output_embeddings(), BaseTunerLayer):
            raise ConfigError("TRL's preference losses read lm_head's weight directly, so an adapter on lm_head would "
                              "never train; remove lm_head from lora_target.")
        self.precompute_ref_logps = False
        text_config = model.config.get_text_config()
        coef = self.args.router_aux_loss_coef
        self.router_aux_loss_coef = getattr(text_config, "router_aux_loss_coef", 0.0) if coef is None else coef
        self.aux_loss_enabled = hasattr(text_config, "output_router_logits") and self.router_aux_loss_coef != 0.0
        self.maybe_activation_offload_context = contextlib.nullcontext()
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._total_train_tokens = 0
        parallelism = self.accelerator.parallelism_config
        self._tp_size = parallelism.tp_size if parallelism is not None else 1
        base = _base_model(model)
        if is_peft_model(model) and reference is None:
            # the reference is this model with its adapter off, and it needs the log-probabilities only: the
            # policy's head also computes the metrics' fields, 1.6x the head's time at SmolLM2's vocabulary
            own_forward = base.__dict__.get("forward")
            add_fused_lm_head(base)
            self._reference_forward = base.forward
            if own_forward is None:
                del base.forward
            else:
                base.forward = own_forward
        add_fused_lm_head(base, outputs=outputs)  # log-probabilities without the full logits
        self.ref_model = None
        if reference is not None:  # a loaded ref_model or frozen copy; LoRA/OFT: None, the adapter is switched off
            add_fused_lm_head(_base_model(reference))
            self.ref_model = reference.to(self.args.device)
        elif not is_peft_model(model) and not self._reference_free():
            raise ValueError("a preference loss with a reference needs the reference model (or a LoRA/OFT adapter "
                             "to switch off)")

    def _reference_free(self) -> bool:
        return False

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Trainer's evaluation: LF's eval datasets arrive tokenised, TRL would prepare them again."""
        return Trainer.evaluate(self, *args, **kwargs)

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple:
        """The loss only: preference evaluation has no logits to compare."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        Trainer._save_checkpoint(self, model, trial)  # TRL would write its model card into output_dir first

    def _store(self, values: dict[str, torch.Tensor]) -> None:
        """Per-pair values, averaged over every process, as one entry of TRL's metrics for the next log."""
        mode = "train" if self.model.training else "eval"
        for key, value in values.items():
            self._metrics[mode][key].append(self.accelerator.gather(value.detach().float().reshape(-1)).mean().item())


class PreferenceTrainer(TRLPreferenceMixin, DPOTrainer):
    """TRL's DPOTrainer on LF's batches and reference (see the module docstring)."""

    def __init__(self, *args: Any, train_args: Any, reference: Any = None, **kwargs: Any) -> None:
        kwargs["args"] = dpo_config(kwargs["args"], train_args)
        Trainer.__init__(self, *args, **kwargs)  # not DPOTrainer's (see the module docstring)
        config = self.args
        self.beta, self.loss_types = config.beta, list(config.loss_type)
        self.loss_weights = config.loss_weights or [1.0] * len(self.loss_types)
        self.label_smoothing, self.ld_alpha = config.label_smoothing, config.ld_alpha
        self.f_divergence_type, self.f_alpha_divergence_coef = config.f_divergence_type, config.f_alpha_divergence_coef
        self.use_weighting = config.use_weighting
        outputs = ("log_probs", "entropy", "mean_logits", "is_top1") + (("log_sum_sq_probs",) if self.use_weighting
                                                                        else ())
        self._lf_setup(train_args, reference, outputs)

    def _reference_free(self) -> bool:
        return self.train_args.pref_loss in REFERENCE_FREE_LOSSES and not self.train_args.pref_losses

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        batch = _trl_batch(inputs)
        policy = _Recorder(self._forward(model))
        if self._reference_free():
            loss = self._reference_free_loss(policy, batch)
        elif self.ld_alpha is None:  # the reference first: its forward's memory is free before the policy's graph
            batch["ref_chosen_logps"], batch["ref_rejected_logps"] = self._reference_logps(batch).chunk(2)
            self.precompute_ref_logps = True
            try:
                loss = DPOTrainer.compute_loss(self, policy, batch)  # TRL's loss step, every loss_type
            finally:
                self.precompute_ref_logps = False
        else:
            loss = DPOTrainer.compute_loss(self, policy, batch)  # TRL runs the reference (LD-DPO's split sums)
        ftx = self.train_args.pref_ftx
        if ftx:
            loss = loss + ftx * -_answer_logps(policy.outputs, batch["completion_mask"])[1].chunk(2)[0].mean()
        return (loss, {}) if return_outputs else loss

    def _reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each row's summed answer log-probability under the reference, as TRL's loss step computes it."""
        kwargs = {key: value for key, value in batch.items() if key != "completion_mask"}
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
        with self._as_reference() as reference:
            outputs = self._forward(reference)(**kwargs, labels=labels, use_cache=False, fused_lm_head=True)
        return _answer_logps(outputs, batch["completion_mask"])[0]

    def _reference_free_loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """ORPO (TRL's odds_ratio_loss plus LlamaFactory's answer NLL) or TRL's CPO loss (`cpo`: sigmoid
        on summed log-probabilities, `simpo`: SimPO on averaged ones), from one fused forward."""
        t = self.train_args
        kwargs = {key: value for key, value in batch.items() if key != "completion_mask"}
        if self.aux_loss_enabled:
            kwargs["output_router_logits"] = True
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
        outputs = model(**kwargs, labels=labels, use_cache=False, fused_lm_head=True)
        total, mean = _answer_logps(outputs, batch["completion_mask"])
        with warnings.catch_warnings():  # TRL's notice that trl.experimental may change
            warnings.simplefilter("ignore")
            from trl.experimental.cpo import CPOTrainer
            from trl.experimental.orpo import ORPOTrainer
        if t.pref_loss == "orpo":
            logps = mean
            shim = SimpleNamespace(beta=t.pref_beta, accelerator=self.accelerator)
            odds, chosen, rejected, log_odds_ratio, log_odds_chosen = ORPOTrainer.odds_ratio_loss(shim, *logps.chunk(2))
            nll = -logps.chunk(2)[0].mean()
            loss = nll - odds.mean()
            extra = {"nll_loss": nll, "log_odds_ratio": log_odds_ratio, "log_odds_chosen": log_odds_chosen}
        else:
            kind = "simpo" if t.pref_loss == "simpo" else "sigmoid"
            logps = mean if kind == "simpo" else total
            shim = SimpleNamespace(beta=t.pref_beta, label_smoothing=t.dpo_label_smoothing, loss_type=kind,
                                   simpo_gamma=t.simpo_gamma, alpha=0.0, accelerator=self.accelerator)
            losses, chosen, rejected = CPOTrainer.cpo_loss(shim, *logps.chunk(2))
            loss, extra = losses.mean(), {}
        chosen_logps, rejected_logps = logps.chunk(2)
        self._store({"rewards/chosen": chosen, "rewards/rejected": rejected, "rewards/margins": chosen - rejected,
                     "rewards/accuracies": (chosen > rejected).float(), "logps/chosen": chosen_logps,
                     "logps/rejected": rejected_logps, **extra})
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
        return loss


def run_dpo(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list, reference: Any = None) -> Trainer:
    plan.training_args.remove_unused_columns = False  # the pairwise columns are not the model's forward arguments
    padding_free = choose_padding_free([model, reference], plan, data)
    trainer = build_trainer(PreferenceTrainer, model, tokenizer, data, plan, callbacks, PairwiseCollator,
                            train_args=plan.train, reference=reference)
    trainer.padding_free = padding_free
    trainer.pairs = padding_free and branches_allowed(model)
    return train_and_save(trainer, plan, data)
