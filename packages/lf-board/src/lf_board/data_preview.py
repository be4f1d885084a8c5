"""Rows as they will be trained: the template applied by lf-data's own renderer, trained tokens
marked, the row's images and the first frame of each of its videos, and the `lf data check` summary
of the chosen datasets."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

REMOTE = re.compile(r"^(https?://|data:)", re.IGNORECASE)


@lru_cache(maxsize=4)
def _tokenizer(reference: str, trust_remote_code: bool) -> tuple[Any, str | None]:
    from lf_data.render import load_tokenizer

    return load_tokenizer(reference, trust_remote_code)


def dataset_names(dataset_dir: str) -> list[str]:
    """Dataset names described in dataset_dir/dataset_info.json (empty when there is none)."""
    from lf_data.dataset_info import read_dataset_info
    from lf_data.errors import DataError

    try:
        return sorted(read_dataset_info(dataset_dir))
    except DataError:
        return []


def _messages(row: dict[str, Any], stage: str) -> list[dict[str, str]]:
    """The conversation of an aligned row that the stage trains on (the chosen answer for pairs)."""
    prompt = list(row["_prompt"])
    response = list(row["_response"])
    return prompt + response[:1] if response else prompt


def first_frame(path: str) -> Any:
    """The first frame of a video file as a PIL image (None when it cannot be read, or av is missing):
    one frame is decoded, not the video."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0), None)
            return frame.to_image() if frame is not None else None
    except Exception:  # noqa: BLE001 -- av raises its own errors for every broken file; the preview shows none
        return None


def row_media(row: dict[str, Any]) -> tuple[list[tuple[Any, str]], list[str]]:
    """(gallery items, sounds) of an aligned row: each local image file and the first frame of each local
    video with a caption, in the row's order; the names of its sounds. URLs are named, not fetched."""
    gallery: list[tuple[Any, str]] = []
    for kind, noun in (("_images", "image"), ("_videos", "video")):
        for i, ref in enumerate(row.get(kind) or [], 1):
            if REMOTE.match(ref):
                continue
            picture = ref if kind == "_images" else first_frame(ref)
            if picture is not None:
                gallery.append((picture, f"{noun} {i}: {Path(ref).name}" + (" (first frame)" if kind == "_videos" else "")))
    sounds = [ref if REMOTE.match(ref) else Path(ref).name for ref in row.get("_audios") or []]
    return gallery, sounds


def preview_row(config: dict[str, Any], index: int) -> dict[str, Any]:
    """Row `index` of the configured datasets: pieces of text with whether each is trained, the
    template used, the token counts, and the row's media (`row_media`)."""
    from lf_data.errors import DataError
    from lf_data.loading import load_aligned
    from lf_data.render import render_conversation
    from lf_data.run_folder import resolve_template
    from lf_data.stages import DATA_STAGES
    from lf_data.templates import get_template

    names = config.get("dataset") or []
    if not names:
        raise DataError("choose at least one dataset to preview.")
    stage = config.get("stage", "sft")
    if stage not in DATA_STAGES:
        raise DataError(f"unknown stage {stage!r}; stages: {', '.join(DATA_STAGES)}.")
    spec = DATA_STAGES[stage]
    reference = config.get("model_name_or_path")
    if not reference:
        raise DataError("choose a model first: the preview uses its tokenizer.")
    max_samples = config.get("max_samples")
    aligned = load_aligned(list(names), config.get("dataset_dir", "data"), skip_invalid=True,
                           max_samples=max_samples, media_dir=config.get("media_dir"),
                           needs_response=spec.processor.needs_response).dataset
    if len(aligned) == 0:
        raise DataError(f"dataset(s) {', '.join(names)} have no valid rows.")
    if not 0 <= index < len(aligned):
        raise DataError(f"row {index} does not exist; the chosen data has rows 0 to {len(aligned) - 1}.")
    row = aligned[index]
    tokenizer, default_template = _tokenizer(reference, bool(config.get("trust_remote_code")))
    template = get_template(resolve_template(config.get("template"), config.get("adapter_name_or_path"),
                                             default_template))
    if spec.plain_text:  # plain text: every token is trained, no template
        text = "".join(m["content"] for m in row["_prompt"])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"pieces": [(text, True)], "template": "none (pt)", "tokens": len(ids), "trained": len(ids),
                "rows": len(aligned), "media": [], "sounds": []}
    rendered = render_conversation(template, tokenizer, _messages(row, stage), tools=row.get("_tools") or None,
                                   system=row.get("_system") or None)
    ids, trained = rendered["input_ids"], rendered["trained"]
    pieces, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or trained[i] != trained[start]:
            pieces.append((tokenizer.decode(ids[start:i]), trained[start]))
            start = i
    cutoff = int(config.get("cutoff_len") or 1 << 30)
    gallery, sounds = row_media(row)
    return {"pieces": pieces, "template": rendered["template"], "tokens": len(ids), "trained": sum(trained),
            "rows": len(aligned), "truncated": len(ids) > cutoff,
            "chosen_only": spec.pairwise, "media": gallery, "sounds": sounds}


def check_summary(config: dict[str, Any]) -> str:
    """`lf data check` on the form's config, as text (no colours)."""
    from lf_data.check import format_check, run_check

    keys = ("model_name_or_path", "template", "dataset", "dataset_dir", "cutoff_len", "max_samples", "stage",
            "val_size", "trust_remote_code")
    result = run_check({k: config[k] for k in keys if k in config})
    return format_check(result, color=False)
