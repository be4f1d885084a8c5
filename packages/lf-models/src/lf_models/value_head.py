"""A scalar value head on a causal LM, for reward models and PPO's value estimates.

The head reads the last hidden state of every position; reward models take the value at each
sequence's last token. It is saved next to the adapter as `value_head.safetensors`, so one base
model can carry a policy adapter, a reward adapter and their heads (model-sharing RLHF).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lf_data.run_folder import VALUE_HEAD_FILE

__all__ = ["ValueHeadModel"]


class ValueHeadModel(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.pretrained_model = model
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.v_head = nn.Linear(config.hidden_size, 1, dtype=torch.float32)
        nn.init.normal_(self.v_head.weight, std=1.0 / (config.hidden_size + 1))
        nn.init.zeros_(self.v_head.bias)

    @property
    def config(self) -> Any:
        return self.pretrained_model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, values): values has one number per position, computed in fp32."""
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                    **kwargs)
        hidden = out.hidden_states[-1].to(self.v_head.weight.dtype)
        return out.logits, self.v_head(hidden).squeeze(-1)

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.pretrained_model, "supports_gradient_checkpointing", False))

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """The Trainer checkpoints the language model's layers (the value head keeps its activations)."""
        self.pretrained_model.activation_checkpointing_enable(**kwargs)

    def enable_input_require_grads(self) -> None:
        self.pretrained_model.enable_input_require_grads()

    def save_value_head(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(directory) / VALUE_HEAD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.detach().contiguous() for k, v in self.v_head.state_dict().items()}, str(tmp))
        tmp.replace(path)
        return path

    def load_value_head(self, directory: str | Path) -> None:
        from safetensors.torch import load_file

        self.v_head.load_state_dict(load_file(str(Path(directory) / VALUE_HEAD_FILE)))
