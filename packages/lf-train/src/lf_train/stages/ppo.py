"""PPO with model sharing (the LlamaFactory paper's RLHF recipe): one copy of the base weights.

The policy is the base with a LoRA adapter, the value model is a value head on the same hidden
states, the reference is the base with adapters switched off, and the reward model is a second
adapter (trained with `stage: rm`) switched in with `set_adapter`, plus its own value head. Each
step: sample answers to a batch of prompts, score them with the reward adapter, subtract a KL
penalty against the reference per token, estimate advantages (GAE), then take clipped PPO updates
of the policy adapter and the value head.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from lf_data.run_folder import FINISHED_MARKER, LOG_FILE, VALUE_HEAD_FILE
from lf_train.plan import TrainPlan

PPO_MAX_NEW_TOKENS = 32

logger = logging.getLogger(__name__)
POLICY, REWARD = "default", "reward"


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding (generation numbers tokens the same way)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def token_logps(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token given the ones before it (one fewer than `ids` per row)."""
    return torch.gather(logits[:, :-1].float().log_softmax(-1), 2, ids[:, 1:].unsqueeze(2)).squeeze(2)


def last_real_token(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (left or right padding)."""
    return mask.shape[1] - 1 - mask.flip(1).long().argmax(1)


class SharedRLHFModel:
    """Policy, value, reference and reward views of one peft model with two adapters.

    Without `reward_path` it only provides the policy, value and reference views (the reward then
    comes from a separate model or an HTTP service).
    """

    def __init__(self, model: Any, reward_path: str | None) -> None:
        self.model = model  # lf_models.value_head.ValueHeadModel over a PeftModel
        self.peft = model.pretrained_model
        if reward_path is None:
            return
        self.peft.load_adapter(reward_path, adapter_name=REWARD, is_trainable=False)
        self.peft.set_adapter(POLICY)
        hidden = model.v_head.in_features
        self.reward_head = torch.nn.Linear(hidden, 1)
        from safetensors.torch import load_file

        self.reward_head.load_state_dict(load_file(str(Path(reward_path) / VALUE_HEAD_FILE)))
        self.reward_head.requires_grad_(False)

    def policy(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask))

    @torch.no_grad()
    def reference_logps(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self.peft.disable_adapter():
            return token_logps(self.peft(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits, ids)

    @torch.no_grad()
    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reward adapter's score of each sequence: its value head at the last real token."""
        self.peft.set_adapter(REWARD)
        try:
            hidden = self.peft(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                               output_hidden_states=True).hidden_states[-1]
        finally:
            self.peft.set_adapter(POLICY)
            for name, param in self.peft.named_parameters():  # set_adapter re-enables grads: keep reward frozen
                if f".{REWARD}." in name:
                    param.requires_grad_(False)
        last = last_real_token(mask)
        return self.reward_head(hidden[torch.arange(len(ids)), last].float()).squeeze(-1)


class SeparateRewardModel:
    """`reward_model_type: full`: a second model (an `rm` run with full or freeze tuning, so its
    output_dir holds whole weights + value head) that scores the sampled sequences."""

    def __init__(self, path: str, tokenizer: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lf_models.value_head import ValueHeadModel

        own = AutoTokenizer.from_pretrained(path)
        if own.get_vocab() != tokenizer.get_vocab():
            from lf_data.errors import ConfigError

            raise ConfigError(f"reward_model {path!r} uses another tokenizer than the policy; train the reward model "
                              "from the same base model, or serve it and use reward_model_type: api.")
        self.model = ValueHeadModel(AutoModelForCausalLM.from_pretrained(path))
        self.model.load_value_head(path)
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _, values = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
        return values[torch.arange(len(ids)), last_real_token(mask)].float()


class ApiRewardModel:
    """`reward_model_type: api`: texts POSTed to an `lf api` reward server's /v1/score/evaluation
    (Bearer `API_KEY` from the environment when set)."""

    def __init__(self, url: str, tokenizer: Any) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1/score/evaluation"):
            self.url += "/v1/score/evaluation"
        self.tokenizer = tokenizer

    def texts(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=False) for row, m in zip(ids, mask, strict=True)]

    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import os
        import urllib.error
        import urllib.request

        body = json.dumps({"model": "reward", "messages": self.texts(ids, mask)}).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get("API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['API_KEY']}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                scores = json.loads(response.read())["scores"]
        except (urllib.error.URLError, KeyError, ValueError) as err:
            raise RuntimeError(f"reward server {self.url} did not answer with scores: {err}") from err
        if len(scores) != len(ids):
            raise RuntimeError(f"reward server {self.url} returned {len(scores)} scores for {len(ids)} texts.")
        return torch.tensor(scores, dtype=torch.float32)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates over the answer tokens (`mask` marks them)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        following = mask[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        next_value = values[:, t + 1] * following if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * following
        advantages[:, t] = running
    return advantages * mask


def run_ppo(model: Any, tokenizer: Any, data: Any, plan: TrainPlan, callbacks: list) -> Any:
    args, t = plan.training_args, plan.train
    shared = SharedRLHFModel(model, t.reward_model if t.reward_model_type == "lora" else None)
    if t.reward_model_type == "lora":
        scorer: Any = shared
    elif t.reward_model_type == "full":
        scorer = SeparateRewardModel(t.reward_model, tokenizer)
    else:
        scorer = ApiRewardModel(t.reward_model, tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    prompts = data.train_dataset["input_ids"]
    batch_size, output_dir = args.per_device_train_batch_size, Path(args.output_dir)
    generator = torch.Generator().manual_seed(args.seed)
    log_path, start = output_dir / LOG_FILE, time.time()
    for step in range(1, args.max_steps + 1):
        chosen = torch.randint(len(prompts), (batch_size,), generator=generator).tolist()
        query, query_mask = left_pad([prompts[i] for i in chosen], tokenizer.pad_token_id)
        model.eval()
        with torch.no_grad():
            sequences = shared.peft.generate(input_ids=query, attention_mask=query_mask, do_sample=True,
                                             top_p=t.ppo_top_p, temperature=t.ppo_temperature,
                                             max_new_tokens=t.max_new_tokens or PPO_MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id)
        response = sequences[:, query.shape[1]:]
        ended = (response == tokenizer.eos_token_id).long().cumsum(1)
        response_mask = ((ended == 0) | ((ended == 1) & (response == tokenizer.eos_token_id))).long()
        mask = torch.cat([query_mask, response_mask], dim=1)
        scores = scorer.reward(sequences, mask)
        with torch.no_grad():
            logits, values = shared.policy(sequences, mask)
            old_logps = token_logps(logits, sequences)
            ref_logps = shared.reference_logps(sequences, mask)
        # per-token quantities over the response positions (token i+1 predicted at position i)
        span = slice(query.shape[1] - 1, sequences.shape[1] - 1)
        act_mask = response_mask.float()
        old_logps, ref_logps, old_values = old_logps[:, span], ref_logps[:, span], values[:, span]
        kl = (old_logps - ref_logps) * act_mask
        rewards = -t.ppo_kl_coef * kl
        last = act_mask.sum(1).long().clamp(min=1) - 1
        rewards[torch.arange(batch_size), last] += scores
        advantages = gae(rewards, old_values, act_mask, gamma=1.0, lam=0.95)
        returns = advantages + old_values
        valid = act_mask.bool()
        advantages = (advantages - advantages[valid].mean()) / (advantages[valid].std() + 1e-8) * act_mask

        model.train()
        for _ in range(t.ppo_epochs):
            logits, values = shared.policy(sequences, mask)
            logps, values = token_logps(logits, sequences)[:, span], values[:, span]
            ratio = torch.exp(logps - old_logps)
            pg = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - 0.2, 1 + 0.2))
            clipped_values = old_values + (values - old_values).clamp(-0.2, 0.2)
            vf = 0.5 * torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
            loss = ((pg + 0.5 * vf) * act_mask).sum() / act_mask.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        record = {"step": step, "total_steps": args.max_steps, "loss": loss.item(), "reward": scores.mean().item(),
                  "kl": (kl.sum(1)).mean().item(), "elapsed_seconds": round(time.time() - start, 2)}
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if step % max(1, args.logging_steps) == 0:
            logger.info("ppo step %d: reward %.3f, kl %.3f, loss %.3f", step, record["reward"], record["kl"],
                        record["loss"])
    shared.peft.save_pretrained(output_dir, selected_adapters=[POLICY])
    model.save_value_head(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / FINISHED_MARKER).write_text(json.dumps({"steps": args.max_steps}))
    return shared
