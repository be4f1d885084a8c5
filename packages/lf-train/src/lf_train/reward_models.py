"""Scoring sampled answers with a reward model, for the online RL stages (ppo, grpo's `reward_model`).

Three sources, chosen by `reward_model_type`: `lora`, an `rm` run's adapter loaded beside the policy's
on the same base weights (model sharing: one copy of the base) and switched in to score, with the rm
run's value head; `full`, an `rm` run that saved whole weights, loaded as a second model; `api`, an
`lf api` reward server's /v1/score/evaluation. Each scores a batch of token-id rows at its last real
token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lf_data.errors import ConfigError
from lf_data.run_folder import VALUE_HEAD_FILE

POLICY, REWARD = "default", "reward"
"""Adapter names on a shared model: the trained policy's, and the rm run's loaded beside it."""


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding (generation numbers tokens the same way)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def last_real_token(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (left or right padding)."""
    return mask.shape[1] - 1 - mask.flip(1).long().argmax(1)


class RewardAdapter:
    """`reward_model_type: lora`: the rm run's adapter on the policy's own peft model, with its value head."""

    def __init__(self, peft: Any, reward_path: str) -> None:
        self.peft = peft
        peft.load_adapter(reward_path, adapter_name=REWARD, is_trainable=False)
        peft.set_adapter(POLICY)
        self.freeze()
        self.head = torch.nn.Linear(peft.get_input_embeddings().embedding_dim, 1)
        from safetensors.torch import load_file

        self.head.load_state_dict(load_file(str(Path(reward_path) / VALUE_HEAD_FILE)))
        self.head.requires_grad_(False)

    def freeze(self) -> None:
        """set_adapter and load_adapter make adapters trainable again: only the policy adapter trains."""
        for name, param in self.peft.named_parameters():
            if f".{REWARD}." in name:
                param.requires_grad_(False)

    @torch.no_grad()
    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reward adapter's score of each sequence: its value head at the last real token."""
        self.peft.set_adapter(REWARD)
        try:
            hidden = self.peft(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                               output_hidden_states=True).hidden_states[-1]
        finally:
            self.peft.set_adapter(POLICY)
            self.freeze()
        head = self.head.to(hidden.device)  # not a module of the model: the Trainer does not move it
        return head(hidden[torch.arange(len(ids)), last_real_token(mask)].float()).squeeze(-1)


class SeparateRewardModel:
    """`reward_model_type: full`: a second model (an `rm` run with full or freeze tuning, so its
    output_dir holds whole weights + value head) that scores the sampled sequences."""

    def __init__(self, path: str, tokenizer: Any, device: Any = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lf_models.value_head import ValueHeadModel

        own = AutoTokenizer.from_pretrained(path)
        if own.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"reward_model {path!r} uses another tokenizer than the policy; train the reward model "
                              "from the same base model, or serve it and use reward_model_type: api.")
        self.model = ValueHeadModel(AutoModelForCausalLM.from_pretrained(path))
        self.model.load_value_head(path)
        self.model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)

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
        return [self.tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=False)
                for row, m in zip(ids, mask, strict=True)]

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
        return torch.tensor(scores, dtype=torch.float32, device=ids.device)


def load_reward_model(kind: str, path: str, tokenizer: Any, peft: Any = None, device: Any = None) -> Any:
    """The scorer `reward_model_type` names; `peft`: the policy's peft model, which `lora` shares."""
    if kind == "lora":
        return RewardAdapter(peft, path)
    if kind == "full":
        return SeparateRewardModel(path, tokenizer, device)
    return ApiRewardModel(path, tokenizer)
