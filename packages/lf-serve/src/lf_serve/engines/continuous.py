"""Continuous batching for the transformers engine: sequences join and leave the running batch at
every decoding step, whatever their sampling options.

The running rows share one left-padded `DynamicCache`. Newcomers are prefilled together in their
own forward and their cache is padded on the left and stacked under the running one; finished rows
are dropped from it, with the columns that have become padding for every row. Each row samples
with its own temperature, top-k, top-p, repetition penalty and (when seeded) its own generator,
in the order transformers' `generate` applies them.

Why not transformers' own continuous batching (`model.init_continuous_batching`), measured on 2
CPU cores (tiny 4-layer Llama, 32 tokens per answer): it sizes its paged cache from free memory (a
15 GB process for that model) and, sized by hand, ran 16 answers at 4,777 tokens/s against 9,615
for one left-padded `generate`, and one answer in 90 ms against 33 ms (SmolLM2-135M: 95 against
152 tokens/s, 1.74 against 1.44 s). Its paged attention and CUDA graphs pay off on GPUs; vLLM is
LF's engine there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lf_serve.decoding import RowDecoder
from lf_serve.engine import Sampling


def supports_continuous_batching(model: Any, max_len: int) -> bool:
    """True when every cache layer of this decoder-only model is a plain growing key/value layer, the
    kind that can be padded on the left, stacked and cut by rows: full attention, or a sliding
    window no shorter than the longest sequence the engine allows (Mistral's 4,096 at a 4k context),
    which never slides. Not real sliding windows, linear attention or encoder-decoder caches."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return False
    try:
        cache = DynamicCache(config=config)
    except Exception:  # a config the cache cannot read: stay on generate
        return False
    return all(type(layer) is DynamicLayer or
               (type(layer) is DynamicSlidingWindowLayer and layer.sliding_window >= max_len)
               for layer in cache.layers)


def _set(layer: Any, keys: torch.Tensor, values: torch.Tensor) -> None:
    layer.keys, layer.values = keys, values
    if hasattr(layer, "cumulative_length"):  # a window that never slides counts what it holds
        layer.cumulative_length = keys.shape[-2]


@dataclass
class Row:
    """One generated sequence of one request."""

    decoder: RowDecoder
    sampling: Sampling
    cancelled: Any  # threading.Event of the request
    generator: torch.Generator | None = None
    owner: Any = None
    """The engine's job this row answers (told of errors)."""
    seen: list[int] | None = None
    """Prompt and generated ids, kept only under a repetition penalty."""


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class RunningBatch:
    def __init__(self, model: Any, device: torch.device, pad_id: int) -> None:
        self.model = model
        self.device = device
        self.pad_id = pad_id
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        supports = getattr(base, "_supports_logits_to_keep", None)
        self.keep_last = {"logits_to_keep": 1} if callable(supports) and supports() else {}
        self.reset()

    def reset(self) -> None:
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        """[rows, cached columns]: 1 where a row has a token in the cache."""
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)
        self.last = torch.zeros(0, dtype=torch.long, device=self.device)
        """Each row's newest token, sampled but not yet in the cache."""

    def __len__(self) -> int:
        return len(self.rows)

    # -- joining ------------------------------------------------------------------------------------
    def join(self, rows: list[Row], prompts: list[list[int]]) -> None:
        """Prefill the newcomers in one forward, sample their first tokens and stack their cache
        under the running rows'. The rows of one request (`n`) share one prompt object: it is
        prefilled once and its cache copied to each row."""
        from transformers import DynamicCache

        unique: dict[int, int] = {}
        for prompt in prompts:
            unique.setdefault(id(prompt), len(unique))
        distinct = list({id(p): p for p in prompts}.values())
        width = max(len(p) for p in distinct)
        ids = torch.full((len(distinct), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(distinct), width), dtype=torch.long)
        for r, prompt in enumerate(distinct):
            ids[r, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[r, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, **self.keep_last)
        logits, cache = out.logits[:, -1, :], out.past_key_values
        if len(distinct) < len(prompts):  # copy each prompt's cache to its rows
            index = torch.tensor([unique[id(p)] for p in prompts], dtype=torch.long, device=self.device)
            logits, mask = logits[index], mask[index]
            for layer in cache.layers:
                _set(layer, layer.keys[index], layer.values[index])
        for row, prompt in zip(rows, prompts, strict=True):
            if row.sampling.repetition_penalty != 1.0:
                row.seen = list(prompt)
        tokens = sample(logits, rows)
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=self.device)
        self._stack(rows, cache, mask, lengths, tokens)
        self._take(tokens, first=len(self.rows) - len(rows))

    def _stack(self, rows: list[Row], cache: Any, mask: torch.Tensor, positions: torch.Tensor,
               tokens: torch.Tensor) -> None:
        if not self.rows:
            self.cache, self.mask = cache, mask
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            for old, new in zip(self.cache.layers, cache.layers, strict=True):
                _set(old, torch.cat([_pad_left(old.keys, width, -2), _pad_left(new.keys, width, -2)]),
                     torch.cat([_pad_left(old.values, width, -2), _pad_left(new.values, width, -2)]))
            self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self.rows += rows
        self.positions = torch.cat([self.positions, positions])
        self.last = torch.cat([self.last, tokens])

    # -- one step -----------------------------------------------------------------------------------
    def step(self) -> None:
        """One token for every running row."""
        for row in self.rows:
            if not row.decoder.done and row.cancelled.is_set():
                row.decoder.finish("cancelled")
        self._drop_finished()
        if not self.rows:
            return
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        out = self.model(input_ids=self.last[:, None], attention_mask=self.mask, position_ids=self.positions[:, None],
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.positions = self.positions + 1
        self.last = sample(out.logits[:, -1, :], self.rows)
        self._take(self.last, first=0)

    def _take(self, tokens: torch.Tensor, first: int) -> None:
        """Feed rows first.. their new token (streaming it), then drop the rows that finished."""
        for row, token in zip(self.rows[first:], tokens.tolist(), strict=True):
            if row.seen is not None:
                row.seen.append(token)
            row.decoder.feed(token)
        self._drop_finished()

    def _drop_finished(self) -> None:
        keep = [i for i, row in enumerate(self.rows) if not row.decoder.done]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.reset()
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        # columns that are padding in every remaining row: no row attends to them any more
        lead = int((self.mask.sum(0) == 0).cumprod(0).sum())
        self.mask = self.mask[:, lead:]
        for layer in self.cache.layers:
            _set(layer, layer.keys[index, :, lead:], layer.values[index, :, lead:])

    def fail(self) -> list[Row]:
        """Forget every row (after an error), returning them so their requests can be told."""
        rows = self.rows
        self.reset()
        return rows


# -- sampling ---------------------------------------------------------------------------------------

def processed_scores(logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
    """Each row's scores under its own options, in the order of transformers' `generate`: the
    repetition penalty, then (sampled rows) temperature, top-k and top-p; removed tokens are -inf."""
    scores = logits.float().clone()
    for r, row in enumerate(rows):
        penalty = row.sampling.repetition_penalty
        if penalty != 1.0 and row.seen:
            ids = torch.tensor(row.seen, dtype=torch.long, device=scores.device)
            seen = scores[r].gather(0, ids)
            scores[r].scatter_(0, ids, torch.where(seen < 0, seen * penalty, seen / penalty))
    drawn = [r for r, row in enumerate(rows) if row.sampling.do_sample]
    if not drawn:
        return scores
    index = torch.tensor(drawn, dtype=torch.long, device=scores.device)
    options = [rows[r].sampling for r in drawn]
    temperature = torch.tensor([s.temperature for s in options], device=scores.device)
    chosen = scores[index] / temperature[:, None]
    vocab = chosen.shape[-1]
    if any(0 < s.top_k < vocab for s in options):
        k = torch.tensor([s.top_k if 0 < s.top_k < vocab else vocab for s in options], device=scores.device)
        threshold = chosen.topk(int(k.max()), dim=-1).values.gather(-1, (k - 1)[:, None])
        chosen = chosen.masked_fill(chosen < threshold, float("-inf"))
    if any(s.top_p < 1.0 for s in options):
        p = torch.tensor([s.top_p for s in options], device=scores.device)
        ascending, order = chosen.sort(dim=-1)
        remove = (ascending.softmax(-1).cumsum(-1) <= (1 - p)[:, None]) & (p < 1.0)[:, None]
        remove[:, -1] = False  # the likeliest token always stays
        chosen = chosen.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    scores[index] = chosen
    return scores


def sample(logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
    """Each row's next token: the best one for greedy rows, a draw for the others (from the
    request's own generator when it has a seed)."""
    scores = processed_scores(logits, rows)
    tokens = scores.argmax(-1)
    drawn = [r for r, row in enumerate(rows) if row.sampling.do_sample]
    if not drawn:
        return tokens
    probs = scores[drawn].softmax(-1)
    free = [i for i, r in enumerate(drawn) if rows[r].generator is None]
    if free:
        tokens[[drawn[i] for i in free]] = torch.multinomial(probs[free], 1)[:, 0]
    for i, r in enumerate(drawn):
        if rows[r].generator is not None:
            tokens[r] = torch.multinomial(probs[i], 1, generator=rows[r].generator)[0]
    return tokens
