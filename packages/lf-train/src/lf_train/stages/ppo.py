"""PPO with model sharing (the LlamaFactory paper's RLHF recipe) on transformers' Trainer.

One copy of the base weights: the policy is the base with a LoRA adapter, the value model is a value
head on the same hidden states, the reference is the base with adapters switched off, and the reward
model is a second adapter (trained with `stage: rm`) switched in with `set_adapter`, plus its own
value head. TRL 1.x no longer ships a PPO trainer, so `PPOTrainer` below is a transformers `Trainer`
whose optimizer steps are PPO's: checkpoints (atomic), exact resume, gradient accumulation, the LR
schedule and warm-up, several processes, logging and `report_to` are the Trainer's, as in every stage.

How a rollout maps onto Trainer steps: a rollout samples answers to `per_device_train_batch_size x
gradient_accumulation_steps x ppo_buffer_size` prompts per process, scores them (reward adapter),
subtracts the KL coefficient x the per-token KL to the reference, and estimates advantages (GAE with
`gamma`, `lam`). The coefficient is `ppo_kl_coef`, fixed, or with `ppo_target` TRL 0.9's adaptive
controller (what LlamaFactory ran), updated after each rollout from its KL over all processes. Each of
`ppo_epochs` passes then shuffles the rollout into micro-batches of `per_device_train_batch_size` rows;
every `gradient_accumulation_steps` micro-batches make one optimizer step of the clipped PPO loss
(`cliprange`, `cliprange_value`, `vf_coef`). So a rollout lasts `ppo_epochs x ppo_buffer_size` optimizer
steps, and `max_steps` counts optimizer steps (with the defaults, one rollout each). A checkpoint taken
inside a rollout stores it (`ppo_state_<rank>.pt`), so a resumed run continues exactly; the checkpoint
also keeps the adaptive KL coefficient.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer

from lf_data.errors import ConfigError
from lf_train.plan import TrainPlan
from lf_train.reward_models import POLICY, RewardAdapter, left_pad, load_reward_model, positions
from lf_train.stages.common import build_trainer, train_and_save

PPO_MAX_NEW_TOKENS = 32
PPO_STATE = "ppo_state_{rank}.pt"
"""Per-process file in a checkpoint: the score statistics, the KL coefficient and, inside a rollout, the
rollout itself."""
FIXED_KL_COEF = 0.05
"""ppo_kl_coef when unset and ppo_target is not (LF's fixed KL penalty)."""
ADAPTIVE_INIT_KL_COEF = 0.2
"""ppo_kl_coef when unset with ppo_target: TRL 0.9's init_kl_coef, where LlamaFactory's controller starts."""
KL_ERROR_CLIP = 0.2

logger = logging.getLogger(__name__)


def token_logps(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token given the ones before it (one fewer than `ids` per row)."""
    return torch.gather(logits[:, :-1].float().log_softmax(-1), 2, ids[:, 1:].unsqueeze(2)).squeeze(2)


def response_logps(logits: torch.Tensor, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Log-probabilities of the tokens from column `start` on (the answer), given the ones before."""
    return token_logps(logits[:, start - 1:], ids[:, start - 1:])


class SharedRLHFModel:
    """Policy, value, reference and reward views of one peft model: the policy adapter with its value
    head, adapters off for the reference, and (with `reward_path`) the rm run's adapter switched in to
    score (`lf_train.reward_models.RewardAdapter`); without it the reward comes from elsewhere."""

    def __init__(self, model: Any, reward_path: str | None) -> None:
        self.model = model  # lf_models.value_head.ValueHeadModel over a PeftModel
        self.peft = model.pretrained_model
        self.reward_adapter = RewardAdapter(self.peft, reward_path) if reward_path is not None else None

    def freeze_reward(self) -> None:
        if self.reward_adapter is not None:
            self.reward_adapter.freeze()

    def policy(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask))

    @torch.no_grad()
    def reference_logps(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self.peft.disable_adapter():
            return token_logps(self.peft(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits, ids)

    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.reward_adapter.reward(ids, mask)


# --- PPO's arithmetic, as in TRL 0.9 (the PPO trainer LlamaFactory 0.9.5 runs) ------------------------

def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum()


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked entries (unbiased variance); `shift_mean=False` keeps the mean."""
    mean = masked_mean(values, mask)
    count = mask.sum()
    var = masked_mean((values - mean) ** 2, mask) * (count / (count - 1) if count > 1 else 1.0)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over the answer tokens (`mask` marks them, a prefix
    of each row): A_t = delta_t + gamma*lam*A_{t+1}, delta_t = r_t + gamma*V_{t+1} - V_t, returns = A + V."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + values


def token_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef x (log p_policy - log p_reference) on every answer token, plus the
    sequence's score on its last one; and the per-token KL itself."""
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(rewards), device=rewards.device), last] += scores
    return rewards, kl


def adaptive_kl_coef(coef: float, mean_kl: float, target: float, n_steps: int, horizon: int) -> float:
    """The KL coefficient after one rollout under the adaptive controller of Ziegler et al. (2019), as
    TRL 0.9 updates it: the relative error of the rollout's KL against `target`, clipped to +-0.2, moves
    the coefficient by `n_steps / horizon` of itself (`n_steps`: the rollout's sequences, all processes).
    Too much KL raises the penalty, too little lowers it."""
    error = min(max(mean_kl / target - 1.0, -KL_ERROR_CLIP), KL_ERROR_CLIP)
    return coef * (1.0 + error * n_steps / horizon)


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (to minimise) and the share of tokens where the clip was binding."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    return masked_mean(torch.max(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 x the larger of the squared errors of the new and the clipped value, and the clipped share."""
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_error, clipped_error = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    return loss, masked_mean((clipped_error > unclipped_error).float(), mask)


@dataclasses.dataclass
class RunningMoments:
    """Mean and standard deviation of every score seen so far (ppo_score_norm), merged batch by batch."""

    mean: float = 0.0
    var: float = 0.0
    count: int = 0

    def update(self, scores: torch.Tensor) -> None:
        scores = scores.double()
        n = scores.numel()
        batch_mean, batch_var = scores.mean().item(), scores.var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Unbiased standard deviation (0 with fewer than two scores)."""
        return math.sqrt(self.var * self.count / (self.count - 1)) if self.count > 1 else 0.0

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.mean) / (self.std + torch.finfo(torch.float32).eps)


# --- the Trainer ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """The ppo keys of the plan, in one place."""

    epochs: int = 1
    buffer_size: int = 1
    kl_coef: float = FIXED_KL_COEF
    """The KL coefficient of the first rollout (of every rollout without kl_target)."""
    kl_target: float | None = None
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    score_norm: bool = False
    whiten_rewards: bool = False
    max_new_tokens: int = PPO_MAX_NEW_TOKENS
    top_p: float = 1.0
    temperature: float = 1.0

    @classmethod
    def from_plan(cls, plan: TrainPlan) -> PPOSettings:
        t = plan.train
        kl_coef = t.ppo_kl_coef if t.ppo_kl_coef is not None else \
            FIXED_KL_COEF if t.ppo_target is None else ADAPTIVE_INIT_KL_COEF
        return cls(epochs=t.ppo_epochs, buffer_size=t.ppo_buffer_size, kl_coef=kl_coef, kl_target=t.ppo_target,
                   kl_horizon=t.ppo_kl_horizon, gamma=t.gamma,
                   lam=t.lam, cliprange=t.cliprange, cliprange_value=t.cliprange_value, vf_coef=t.vf_coef,
                   score_norm=t.ppo_score_norm, whiten_rewards=t.ppo_whiten_rewards,
                   max_new_tokens=t.max_new_tokens or PPO_MAX_NEW_TOKENS, top_p=t.ppo_top_p,
                   temperature=t.ppo_temperature)


class RolloutSampler(Sampler[int]):
    """Prompt indices for the rollouts: each epoch a seeded permutation (the order wraps around to fill
    the last rollout), cut into blocks of one rollout for every process, each block repeated once per
    micro-batch the rollout is trained on. The dataloader's batches of one process's rollout therefore
    hold the same prompts `repeats` times in a row; the trainer samples from the first and trains on
    the rollout for the rest (the Trainer's accumulation, skipping on resume and epochs stay its own)."""

    def __init__(self, size: int, block: int, repeats: int, shuffle: bool, seed: int) -> None:
        self.size, self.block, self.repeats, self.shuffle, self.seed = size, block, repeats, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def blocks(self) -> int:
        return math.ceil(self.size / self.block)

    def __len__(self) -> int:
        return self.blocks() * self.block * self.repeats

    def __iter__(self):  # noqa: ANN204 (a generator of ints)
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        order = (order * math.ceil(self.blocks() * self.block / self.size))[:self.blocks() * self.block]
        for start in range(0, len(order), self.block):
            for _ in range(self.repeats):
                yield from order[start:start + self.block]


class PromptCollator:
    """Left-padded prompt ids (generation continues each row from its last token)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = left_pad([list(row["input_ids"]) for row in rows], self.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask}


class PPOTrainer(Trainer):
    """A Trainer whose micro-batches are slices of PPO rollouts (see the module docstring)."""

    def __init__(self, *args: Any, shared: SharedRLHFModel, scorer: Any, settings: PPOSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared, self.scorer, self.settings = shared, scorer, settings
        self.model_accepts_loss_kwargs = False  # the loss is a mean per micro-batch: the Trainer divides by accumulation
        self.micro_per_epoch = settings.buffer_size * self.args.gradient_accumulation_steps
        self.micro_per_rollout = settings.epochs * self.micro_per_epoch
        self.rollout_rows = self.args.per_device_train_batch_size * self.micro_per_epoch
        self.moments = RunningMoments()
        self.kl_coef = settings.kl_coef  # the next rollout's; the same on every process
        self.rollout: dict[str, Any] | None = None
        self._micro: int | None = None  # micro-batches trained, counted from step 0 (set on the first step)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._rollout_tokens: torch.Tensor | None = None

    # the data: one block of prompts per rollout, repeated for each of its micro-batches
    def get_train_dataloader(self) -> Any:
        return self._get_dataloader(dataset=self.train_dataset, description="Training", batch_size=self.rollout_rows,
                                    sampler_fn=self._get_train_sampler, is_training=True)

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return RolloutSampler(len(dataset), self.rollout_rows * self.args.world_size, self.micro_per_rollout,
                              shuffle=self.args.train_sampling_strategy != "sequential", seed=self.args.seed)

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        if self._micro is None:
            self._micro = self.state.global_step * self.args.gradient_accumulation_steps
        position = self._micro % self.micro_per_rollout
        if position == 0:
            self.rollout = self.make_rollout(inputs)
        elif self.rollout is None:
            raise ConfigError("the checkpoint was taken inside a PPO rollout, and its rollout does not fit this run; "
                              "resume with the ppo_epochs, ppo_buffer_size, gradient_accumulation_steps, "
                              "per_device_train_batch_size and number of processes it was written with.")
        self._micro += 1
        epoch, slot = divmod(position, self.micro_per_epoch)
        rows = self.rollout["order"][epoch][slot * self.args.per_device_train_batch_size:
                                            (slot + 1) * self.args.per_device_train_batch_size]
        batch = {key: self.rollout[key][rows] for key in ("input_ids", "attention_mask", "response_mask", "old_logps",
                                                            "old_values", "advantages", "returns")}
        for key in ("rewards/mean", "rewards/std", "kl", "ppo/response_length", "ppo/kl_coef"):
            self._metrics[key].append(self.rollout["metrics"][key])
        return super().training_step(model, batch, num_items_in_batch)

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        ids, mask, response_mask = inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"]
        start = ids.shape[1] - response_mask.shape[1]
        logits, values = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
        logps = response_logps(logits, ids, start)
        values = values[:, start - 1:-1].float()
        s = self.settings
        pg, clipfrac = policy_loss(logps, inputs["old_logps"], inputs["advantages"], response_mask, s.cliprange)
        vf, value_clipfrac = value_loss(values, inputs["old_values"], inputs["returns"], response_mask, s.cliprange_value)
        loss = pg + s.vf_coef * vf
        with torch.no_grad():
            approx_kl = 0.5 * masked_mean((logps - inputs["old_logps"]) ** 2, response_mask)
        for key, value in (("ppo/policy_loss", pg), ("ppo/value_loss", vf), ("ppo/clipfrac", clipfrac),
                           ("ppo/value_clipfrac", value_clipfrac), ("ppo/approx_kl", approx_kl)):
            self._metrics[key].append(value.item())
        return (loss, {"values": values}) if return_outputs else loss

    @torch.no_grad()
    def make_rollout(self, prompts: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Sample answers to this process's prompts, score them, and compute what the PPO epochs train on."""
        s, args = self.settings, self.args
        tokenizer = self.processing_class
        unwrapped = self.accelerator.unwrap_model(self.model)
        peft = unwrapped.pretrained_model
        unwrapped.eval()
        device = args.device
        query, query_mask = prompts["input_ids"].to(device), prompts["attention_mask"].to(device)
        width, step = query.shape[1], args.per_device_train_batch_size
        chunks = [slice(i, i + step) for i in range(0, len(query), step)]
        responses = []
        for rows in chunks:
            with self.autocast_smart_context_manager():
                out = peft.generate(input_ids=query[rows], attention_mask=query_mask[rows], do_sample=True,
                                    top_p=s.top_p, temperature=s.temperature, max_new_tokens=s.max_new_tokens,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                    use_cache=True)
            responses.append(out[:, width:])
        longest = max(r.shape[1] for r in responses)
        response = torch.cat([torch.nn.functional.pad(r, (0, longest - r.shape[1]), value=tokenizer.pad_token_id)
                              for r in responses])
        ended = (response == tokenizer.eos_token_id).long().cumsum(1)
        response_mask = ((ended == 0) | ((ended == 1) & (response == tokenizer.eos_token_id))).long()
        response = torch.where(response_mask.bool(), response, tokenizer.pad_token_id)  # nothing after the end
        sequences, mask = torch.cat([query, response], dim=1), torch.cat([query_mask, response_mask], dim=1)

        old_logps, ref_logps, old_values, scores = [], [], [], []
        for rows in chunks:
            ids, m = sequences[rows], mask[rows]
            with self.autocast_smart_context_manager():
                logits, values = unwrapped(input_ids=ids, attention_mask=m, position_ids=positions(m))
                old_logps.append(response_logps(logits, ids, width))
                old_values.append(values[:, width - 1:-1].float())
                with peft.disable_adapter():  # the reference: the base weights alone
                    ref_logps.append(response_logps(peft(input_ids=ids, attention_mask=m, position_ids=positions(m)).logits,
                                                    ids, width))
                scores.append(self.scorer.reward(ids, m).float().to(device))
        old_logps, ref_logps, old_values = torch.cat(old_logps), torch.cat(ref_logps), torch.cat(old_values)
        raw_scores = torch.cat(scores)
        all_scores = self.accelerator.gather(raw_scores)
        if s.score_norm:
            self.moments.update(all_scores)
            scores = self.moments.normalise(raw_scores)
        else:
            scores = raw_scores
        act = response_mask.float()
        kl_coef = self.kl_coef
        rewards, kl = token_rewards(scores, old_logps, ref_logps, act, kl_coef)
        if s.whiten_rewards:
            rewards = masked_whiten(rewards, act, shift_mean=False)
        advantages, returns = gae(rewards, old_values, act, s.gamma, s.lam)
        advantages = masked_whiten(advantages, act)
        order = torch.stack([torch.randperm(len(query)) for _ in range(s.epochs)]).to(device)
        stats = torch.stack([kl.sum(1).mean(), act.sum(1).mean()])
        stats = self.accelerator.reduce(stats, reduction="mean")
        if s.kl_target is not None:  # from the KL over all processes: every process gets the same coefficient
            self.kl_coef = adaptive_kl_coef(kl_coef, stats[0].item(), s.kl_target,
                                            self.rollout_rows * args.world_size, s.kl_horizon)
        self._rollout_tokens = mask.sum() if args.include_num_input_tokens_seen == "non_padding" \
            else torch.tensor(mask.numel(), device=device)
        metrics = {"rewards/mean": all_scores.mean().item(), "rewards/std": all_scores.std().item()
                   if all_scores.numel() > 1 else 0.0, "kl": stats[0].item(), "ppo/response_length": stats[1].item(),
                   "ppo/kl_coef": kl_coef}
        return {"input_ids": sequences, "attention_mask": mask, "response_mask": act, "old_logps": old_logps,
                "old_values": old_values, "advantages": advantages, "returns": returns, "order": order,
                "metrics": metrics}

    def _track_num_input_tokens(self, inputs: Any) -> None:
        """Tokens of each rollout (prompts and answers), counted once, not once per micro-batch."""
        tokens, self._rollout_tokens = self._rollout_tokens, None
        if self.args.include_num_input_tokens_seen == "no" or tokens is None:
            return
        self.state.num_input_tokens_seen += int(self.accelerator.gather(tokens.reshape(1)).sum().item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The Trainer's log plus PPO's means since the last one, averaged over the processes."""
        if self._metrics:
            keys = sorted(self._metrics)
            means = torch.tensor([sum(self._metrics[k]) / len(self._metrics[k]) for k in keys], device=self.args.device)
            means = self.accelerator.reduce(means, reduction="mean")
            logs = {**logs, **{k: round(v, 6) for k, v in zip(keys, means.tolist(), strict=True)}}
            self._metrics.clear()
        super().log(logs, start_time)

    # saving: only the policy adapter (not the reward adapter) and the value head
    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        if not self.args.should_save:  # every process calls _save; one writes (two would race on the files)
            return
        output_dir = Path(output_dir or self.args.output_dir)
        self.model.pretrained_model.save_pretrained(output_dir, selected_adapters=[POLICY])
        self.model.save_value_head(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=self.model.pretrained_model)
        self.model.pretrained_model.set_adapter(POLICY)
        self.shared.freeze_reward()
        self.model.load_value_head(resume_from_checkpoint)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        inside = (self.state.global_step * self.args.gradient_accumulation_steps) % self.micro_per_rollout != 0
        state = {"moments": dataclasses.asdict(self.moments), "kl_coef": self.kl_coef, "layout": self._layout(),
                 "rollout": self.rollout if inside else None}
        Path(output_dir).mkdir(parents=True, exist_ok=True)  # another process may not have created it yet
        torch.save(state, Path(output_dir) / PPO_STATE.format(rank=self.args.process_index))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = Path(checkpoint or "") / PPO_STATE.format(rank=self.args.process_index)
        if checkpoint is None or not path.is_file():
            return
        state = torch.load(path, map_location=self.args.device, weights_only=True)
        self.moments = RunningMoments(**state["moments"])
        if self.settings.kl_target is not None and "kl_coef" in state:  # the controller's state, not the start
            self.kl_coef = float(state["kl_coef"])
        if state["layout"] == self._layout():
            self.rollout = state["rollout"]

    def _layout(self) -> list[int]:
        """What a saved rollout must match to be trained on after a resume."""
        return [self.micro_per_rollout, self.rollout_rows, self.args.per_device_train_batch_size, self.args.world_size]


def run_ppo(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list) -> Any:
    args, t = plan.training_args, plan.train  # eval data and streaming were refused by the stage's check
    shared = SharedRLHFModel(model, t.reward_model if t.reward_model_type == "lora" else None)
    scorer = shared if t.reward_model_type == "lora" else \
        load_reward_model(t.reward_model_type, t.reward_model, tokenizer, device=args.device)
    for module in model.modules():  # old and new log-probabilities must come from the same function (as TRL does)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    args.remove_unused_columns = False  # the collator reads input_ids itself
    trainer = build_trainer(PPOTrainer, model, tokenizer, data, plan, callbacks, PromptCollator,
                            shared=shared, scorer=scorer, settings=PPOSettings.from_plan(plan))
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if trainer.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3):
        raise ConfigError("stage ppo samples with the whole policy on each process and switches adapters on it; "
                          "sharded weights (FSDP, DeepSpeed ZeRO-3) are not supported: use DeepSpeed ZeRO-2 or none.")
    return train_and_save(trainer, plan, data)
