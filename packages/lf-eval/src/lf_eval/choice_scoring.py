"""Pick a choice letter: the one whose token has the highest next-token logit after the prompt.

Prompts are sorted by length and run in batches with left padding (every prompt ends at the last
position, where the next-token logits are read); position ids skip the padding, so a batched
prompt scores exactly as it would alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lf_data.errors import ConfigError


def choice_token_ids(tokenizer: Any, letters: Sequence[str]) -> list[int]:
    """The token that starts a reply of each letter; they must differ."""
    encoded = [tokenizer.encode(letter, add_special_tokens=False) for letter in letters]
    ids = [tokens[-1] if tokens else None for tokens in encoded]
    if None in ids or len(set(ids)) != len(ids):
        raise ConfigError(f"the tokenizer does not give the letters {', '.join(letters)} distinct tokens "
                          f"({encoded}); multiple-choice scoring needs one token per letter.")
    return ids  # type: ignore[return-value]


def score_choices(model: Any, prompts: Sequence[list[int]], choice_ids: list[int], pad_id: int,
                  batch_size: int, progress: Any = None) -> list[list[float]]:
    """Next-token logits of the choice tokens after each prompt, in the order of `prompts`."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    scores: list[list[float]] = [[] for _ in prompts]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            inputs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
                      "position_ids": positions.to(device)}
            try:
                logits = model(**inputs, logits_to_keep=1).logits[:, -1]  # only the last position's logits
            except TypeError:  # a model class without logits_to_keep
                logits = model(**inputs).logits[:, -1]
            chosen = logits[:, choice_ids].float().cpu().tolist()
            for row, i in enumerate(batch):
                scores[i] = chosen[row]
            if progress is not None:
                progress(len(batch))
    return scores
