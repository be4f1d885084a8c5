"""Batch collation for supervised data: padded, padding-free (the examples end to end) or packed.

Neat-packed rows carry each token's example number in ``attention_mask`` (1, 1, 2, 2, 2, ...). They
become a 4-D boolean mask where a token sees only earlier tokens of its own example, so packed
examples give exactly the logits they would give alone (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lf_data.processors import IGNORE_INDEX


@dataclass
class SupervisedCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None
    neat_packing: bool = False
    padding_free: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.padding_free:
            return self._end_to_end(rows)
        length = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def padded(key: str, value: int) -> torch.Tensor:
            return torch.tensor([list(r[key]) + [value] * (length - len(r[key])) for r in rows], dtype=torch.long)

        batch = {"input_ids": padded("input_ids", self.pad_token_id), "labels": padded("labels", IGNORE_INDEX)}
        segments = padded("attention_mask", 0)
        if "position_ids" in rows[0]:
            batch["position_ids"] = padded("position_ids", 0)
        if self.neat_packing:
            causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
            same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] > 0)
            mask = (same & causal) | torch.eye(length, dtype=torch.bool)  # padding sees itself: no empty rows
            batch["attention_mask"] = mask[:, None]
        else:
            batch["attention_mask"] = (segments > 0).long()
        return batch

    def _end_to_end(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One row of all the examples (lf_models.padding_free), positions restarting at each. An
        example's first label is dropped: it would be the target of the previous example's last token
        (alone it is never a target), so the loss and its token count equal the padded batch's."""
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for row in rows:
            ids += row["input_ids"]
            labels += [IGNORE_INDEX, *row["labels"][1:]]
            positions += range(len(row["input_ids"]))
        if self.pad_to_multiple_of and len(ids) % self.pad_to_multiple_of:  # the padding is an example of its own
            extra = self.pad_to_multiple_of - len(ids) % self.pad_to_multiple_of
            ids, labels, positions = ids + [self.pad_token_id] * extra, labels + [IGNORE_INDEX] * extra, [*positions, *range(extra)]
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "position_ids": torch.tensor([positions])}


@dataclass
class PairwiseCollator:
    """Chosen and rejected examples in one batch: the n chosen first, the n rejected last."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        flat = [{"input_ids": r[f"{side}_input_ids"], "attention_mask": r[f"{side}_attention_mask"],
                 "labels": r[f"{side}_labels"]} for side in ("chosen", "rejected") for r in rows]
        return SupervisedCollator(self.pad_token_id, self.pad_to_multiple_of)(flat)


@dataclass
class KTOCollator:
    """KTO rows: the answers, their mismatched KL pairs, and the desirable flags."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = SupervisedCollator(self.pad_token_id, self.pad_to_multiple_of)
        batch = pad([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows])
        kl = pad([{"input_ids": r["kl_input_ids"], "attention_mask": r["kl_attention_mask"],
                   "labels": r["kl_labels"]} for r in rows])
        batch.update({f"kl_{key}": value for key, value in kl.items()})
        batch["kto_tags"] = torch.tensor([bool(r["kto_tags"]) for r in rows])
        return batch


SEQUENCE_GROUPS = {"SupervisedCollator": (("", ""),), "PairwiseCollator": (("chosen_", ""), ("rejected_", "")),
                   "KTOCollator": (("", ""), ("kl_", "kl_"))}
"""Per collator: (row column prefix, batch key prefix) of each sequence a row holds, in batch order."""


@dataclass
class MediaCollator:
    """A multimodal model's batches: each row's media markers are expanded by the model's processor
    (`lf_models.media`), then the stage's own collator pads; the processor's tensors join the batch
    under the keys the model's forward takes (with `kl_` in front for KTO's mismatched pairs).

    A neat-packed row is expanded example by example, each with its own items: its example numbers
    and restarting positions stretch over the expansions, and an M-RoPE model (`rope_index`: its own
    get_rope_index) gets each example's 3-D positions as the example alone would have them. A plainly
    packed row is one sequence: the model numbers its positions itself."""

    inner: Any
    media: Any  # lf_models.media.MediaInputs
    rope_index: Any = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from lf_models.media import KINDS, collate_tensors

        rows = [dict(r) for r in rows]
        neat = getattr(self.inner, "neat_packing", False)
        tensors: dict[str, list[dict[str, Any]]] = {}
        types: dict[str, list[list[int]]] = {}
        rope: list[torch.Tensor] = []
        memo: dict[tuple[str, str], Any] = {}  # chosen and rejected share their row's images
        for source, target in SEQUENCE_GROUPS[type(self.inner).__name__]:
            for row in rows:
                expanded = self._expand_row(row, source, neat, memo)
                tensors.setdefault(target, []).extend(item for out in expanded for item in out.tensors)
                types.setdefault(target, []).append([t for out in expanded for t in out.type_ids or []])
                if neat and self.rope_index is not None:
                    rope.append(torch.cat([self._positions(out) for out in expanded], dim=1))
        for row in rows:
            for kind in KINDS:
                row.pop(kind, None)
            if not neat:
                row.pop("position_ids", None)  # stale once markers are expanded; the model counts them
        batch = self.inner(rows)
        for target, items in tensors.items():
            batch.update({f"{target}{key}": value for key, value in collate_tensors(items).items()})
            if self.media.type_key:  # padded like input_ids (on the right)
                length = batch[f"{target}input_ids"].shape[1]
                batch[f"{target}{self.media.type_key}"] = torch.tensor(
                    [t + [0] * (length - len(t)) for t in types[target]], dtype=torch.long)
        if rope:
            length = batch["input_ids"].shape[1]
            batch["position_ids"] = torch.stack([torch.nn.functional.pad(p, (0, length - p.shape[1])) for p in rope],
                                                dim=1)
        return batch

    def _expand_row(self, row: dict[str, Any], source: str, neat: bool, memo: dict) -> list[Any]:
        """Each example of `row` (the whole row unless neat-packed) with its markers expanded; the row's
        columns are rewritten to the expanded sequence."""
        import json

        from lf_models.media import KINDS

        ids, labels = list(row[f"{source}input_ids"]), list(row[f"{source}labels"])
        numbers = list(row[f"{source}attention_mask"]) if neat else [1] * len(ids)
        queues = {kind: json.loads(row[kind]) if row.get(kind) else [] for kind in KINDS}
        expanded, mask, positions = [], [], []
        start = 0
        while start < len(ids):
            end = start + 1
            while end < len(ids) and numbers[end] == numbers[start]:
                end += 1
            found = [kind for _, kind in self.media.spans(ids[start:end])]
            items = {kind: [queues[kind].pop(0) for _ in range(found.count(kind))] for kind in KINDS}
            out = self.media.expand(ids[start:end], labels[start:end], items, memo)
            expanded.append(out)
            mask += [numbers[start]] * len(out.input_ids)
            positions += list(range(len(out.input_ids)))
            start = end
        row[f"{source}input_ids"] = [t for out in expanded for t in out.input_ids]
        row[f"{source}labels"] = [t for out in expanded for t in out.labels]
        row[f"{source}attention_mask"] = mask
        if neat:
            row["position_ids"] = positions
        return expanded

    def _positions(self, out: Any) -> torch.Tensor:
        """(3, length): one example's M-RoPE positions, from the model's get_rope_index on it alone."""
        import inspect

        from lf_models.media import collate_tensors

        accepted = self.__dict__.get("_rope_parameters")
        if accepted is None:  # once per collator, not per example
            accepted = self.__dict__["_rope_parameters"] = set(inspect.signature(self.rope_index).parameters)
        kwargs = {key: value for key, value in (collate_tensors(out.tensors) if out.tensors else {}).items()
                  if key in accepted and key not in ("input_ids", "attention_mask")}
        if self.media.type_key in accepted:
            kwargs[self.media.type_key] = torch.tensor([out.type_ids or [0] * len(out.input_ids)])
        positions, _ = self.rope_index(torch.tensor([out.input_ids]), **kwargs)
        return positions[:, 0]


NOT_MODEL_INPUTS = ("labels", "kto_tags")


def forward_inputs(batch: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The model's keyword arguments for one sequence group of a batch: ids, masks and any media tensors
    (`prefix` "kl_" picks KTO's mismatched pairs)."""
    return {key[len(prefix):]: value for key, value in batch.items()
            if key.startswith(prefix) and key[len(prefix):] not in NOT_MODEL_INPUTS
            and (prefix or not key.startswith("kl_"))}
