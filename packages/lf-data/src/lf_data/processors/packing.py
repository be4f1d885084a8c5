"""Pack tokenised examples into `cutoff_len` sequences (first-fit decreasing).

Plain packing lets packed examples attend to each other (cheap, slightly leaky). Neat packing
keeps them apart: ``attention_mask`` holds each token's example number (1, 1, 2, 2, 2, ...) and
``position_ids`` restart at 0 for every example, so a collator can build a block-diagonal mask
and every example sees exactly what it would see alone.

Rows with media (``images``/``videos``/``audios``: JSON lists, "" for none) keep them: a packed row
lists its examples' items in order, and the collator expands each example's markers with its own items.
"""

from __future__ import annotations

import json
from typing import Any

from lf_data.dataset_info import MEDIA_COLUMNS


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Groups of indices whose lengths sum to at most `capacity` each."""
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        size = lengths[index]
        for b, free in enumerate(room):
            if size <= free:
                bins[b].append(index)
                room[b] -= size
                break
        else:
            bins.append([index])
            room.append(capacity - size)
    return bins


def pack(batch: dict[str, list[Any]], cutoff_len: int, neat: bool) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": [], "position_ids": []}
    media = [kind for kind in MEDIA_COLUMNS if kind in batch]
    out.update({kind: [] for kind in media})
    for group in first_fit_decreasing([len(ids) for ids in batch["input_ids"]], cutoff_len):
        ids, labels, mask, positions = [], [], [], []
        for number, index in enumerate(group, start=1):
            length = len(batch["input_ids"][index])
            ids += batch["input_ids"][index]
            labels += batch["labels"][index]
            mask += [number if neat else 1] * length
            positions += list(range(length)) if neat else list(range(len(positions), len(positions) + length))
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["attention_mask"].append(mask)
        out["position_ids"].append(positions)
        for kind in media:
            items = [item for index in group if batch[kind][index] for item in json.loads(batch[kind][index])]
            out[kind].append(json.dumps(items) if items else "")
    return out
