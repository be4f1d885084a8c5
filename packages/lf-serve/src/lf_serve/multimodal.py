"""Images, videos and sounds in a served model's prompt: where each item sits and what the model receives.

An item is written into a message as lf-data's placeholder (`<image>`, `<video>`, `<audio>`: the API puts
one where each media part was; a conversation without placeholders of a kind gets them at the start of
the first user message, as LlamaFactory does). The placeholders become the model family's markers
(`lf_models.families.ModelFamily.markers`, written by `lf_data.aligner.place_markers` as in training) and
the template encodes the prompt. Then, per engine:

- transformers: `lf_models.media.MediaInputs` -- the training path -- reads each item within the model's
  limits (image_max_pixels, video_fps ...), runs the model's own processor on its marker, splices the
  expansion into the prompt and keeps the processor's tensors, which go to `generate` with the batch;
- vLLM: the markers stay one per item and the items, read by the same readers within the same limits,
  go with the prompt as `multi_modal_data`; vLLM's processor expands them.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lf_models.media import KINDS
from lf_serve.errors import RequestError, UnsupportedError
from lf_serve.limits import MAX_MEDIA

VLLM_MODALITY = {"images": "image", "videos": "video", "audios": "audio"}
"""vLLM's multi_modal_data key of each kind."""


@dataclass
class RequestMedia:
    """What one request's media became for its engine."""

    tensors: dict[str, Any] | None = None
    """transformers: the processor's tensors of the request's items (pixel_values, image_grid_thw ...)."""
    type_ids: list[int] | None = None
    """transformers: the processor's token types along the prompt ids (mm_token_type_ids ...), when it has them."""
    data: dict[str, list[Any]] | None = None
    """vLLM: multi_modal_data (PIL images, frame arrays, (waveform, rate) pairs)."""


def family_markers(config: Any) -> dict[str, str]:
    """kind -> marker of the model family's media; empty for a text model (or a family not wired)."""
    from lf_models.families import family_for

    family = family_for(config)
    return {kind: family.markers[kind] for kind in KINDS if family is not None and kind in family.markers}


def media_inputs(markers: Mapping[str, str], tokenizer: Any, model_args: Any, processor_folders: list[str] | None,
                 reference: str) -> Any:
    """lf_models.media.MediaInputs for a served model (None for a text model). With `processor_folders`
    (the transformers engine) the model's processor is loaded from the first of them that has one, then
    `reference`; without (vLLM, which has its own), only the markers and limits are kept. Either way the
    tokenizer must hold the markers as special tokens."""
    if not markers:
        return None
    from lf_models.media import MediaInputs, MediaLimits, load_media_inputs

    limits = MediaLimits.from_args(model_args)
    if processor_folders is None:
        return MediaInputs(None, tokenizer, markers, limits)
    return load_media_inputs(reference, tokenizer, markers, limits, folders=processor_folders,
                             trust_remote_code=model_args.trust_remote_code)


def check_counts(model_name: str, markers: Mapping[str, str], counts: Mapping[str, int]) -> None:
    """Refuse media a model does not take, or more items than a request may bring, before any is read."""
    from lf_models.families import FAMILIES

    refused = [kind for kind in KINDS if counts.get(kind) and kind not in markers]
    if refused:
        takers = sorted(t for t, f in FAMILIES.items() if set(refused) <= set(f.media))
        takes = f" (it takes {' and '.join(markers)} only)" if markers else ""
        raise UnsupportedError(f"model {model_name!r} does not take {' or '.join(refused)}{takes}; serve a model "
                               f"that does ({', '.join(takers) or 'no family yet'}) to send them.", "messages")
    for kind in KINDS:
        if counts.get(kind, 0) > MAX_MEDIA[kind]:
            raise RequestError(f"a request takes at most {MAX_MEDIA[kind]} {kind}; this one has {counts[kind]}.",
                               "messages")


def place_media(messages: list[dict[str, str]], counts: Mapping[str, int],
                markers: Mapping[str, str]) -> list[dict[str, str]]:
    """Messages with each placeholder of a kind that has items written as the model's marker. A kind
    with items and no placeholder gets one per item at the start of the first user message (images,
    then videos, then sounds); a kind without items keeps its placeholder text as text."""
    from lf_data.aligner import PLACEHOLDERS, place_markers

    messages = [dict(m) for m in messages]
    given = [kind for kind in KINDS if counts.get(kind)]
    missing = ""
    for kind in given:
        placeholder = PLACEHOLDERS[kind]
        found = sum(m["content"].count(placeholder) for m in messages)
        if found == 0:
            missing += placeholder * counts[kind]
        elif found != counts[kind]:
            raise RequestError(f"the messages hold {found} {placeholder} placeholder(s) but {counts[kind]} {kind} "
                               f"came with them; give one placeholder per item, or none.", "messages")
    if missing:
        first = next((i for i, m in enumerate(messages) if m["role"] == "user"), 0)
        messages[first]["content"] = missing + messages[first]["content"]
    return place_markers(messages, {kind: markers[kind] for kind in given})


def as_ref(kind: str, item: Any) -> str:
    """An item as lf_models.media reads it: a checked request item (lf_serve.media_sources.MediaItem), a
    path or URL (a Python caller's own, read as training reads a dataset's), bytes, or a PIL image."""
    from lf_serve.media_sources import MediaItem

    if isinstance(item, MediaItem):
        return item.ref
    if isinstance(item, str) and item:
        return item
    if isinstance(item, os.PathLike):
        return os.fspath(item)
    if isinstance(item, bytes):
        return "data:;base64," + base64.b64encode(item).decode()
    if kind == "images" and hasattr(item, "save") and hasattr(item, "mode"):  # a PIL image
        buffer = io.BytesIO()
        (item if item.mode in ("RGB", "RGBA", "L") else item.convert("RGB")).save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    raise RequestError(f"{kind} are given as paths, URLs or bytes{' (or PIL images)' if kind == 'images' else ''}; "
                       f"got {type(item).__name__}.", "messages")


def _check_markers(inputs: Any, ids: list[int], refs: Mapping[str, list[str]]) -> None:
    """The prompt holds one marker per item: none typed as the model's own tokens (which only happens
    with special_tokens_in_content: true)."""
    spans = inputs.spans(ids)
    for kind, marker in inputs.markers.items():
        found, given = sum(1 for _, k in spans if k == kind), len(refs.get(kind) or [])
        if found != given:
            raise RequestError(f"the prompt holds {found} {marker} marker(s) for {given} {kind}; send {kind} as "
                               "content parts (or placeholders), not as the model's own tokens.", "messages")


def _unreadable(err: Exception) -> RequestError:
    return RequestError(f"a media item could not be read: {type(err).__name__}: {err}", "messages")


def expand(inputs: Any, ids: list[int], refs: Mapping[str, list[str]]) -> tuple[list[int], RequestMedia | None]:
    """transformers: the prompt with each marker expanded by the model's processor, and its tensors."""
    from lf_data.errors import DataError
    from lf_models.media import IGNORE_INDEX, collate_tensors

    _check_markers(inputs, ids, refs)
    if not any(refs.values()):
        return ids, None
    try:
        out = inputs.expand(ids, [IGNORE_INDEX] * len(ids), refs)
    except DataError as err:
        raise RequestError(str(err), "messages") from None
    except (OSError, ValueError, RuntimeError, EOFError) as err:  # a reader's error: the item is broken
        raise _unreadable(err) from None
    return out.input_ids, RequestMedia(tensors=collate_tensors(out.tensors), type_ids=out.type_ids)


def read_for_vllm(inputs: Any, ids: list[int], refs: Mapping[str, list[str]]) -> RequestMedia | None:
    """vLLM: the items read within the model's limits, as multi_modal_data."""
    from lf_models.media import LOADERS

    _check_markers(inputs, ids, refs)
    data: dict[str, list[Any]] = {}
    try:
        for kind in KINDS:
            loaded = [LOADERS[kind](ref, inputs.limits) for ref in refs.get(kind) or []]
            if kind == "videos":
                import numpy as np

                loaded = [np.stack([np.asarray(frame) for frame in frames]) for frames, _ in loaded]
            elif kind == "audios":
                loaded = [(wave, inputs.limits.audio_sampling_rate) for wave in loaded]
            if loaded:
                data[VLLM_MODALITY[kind]] = loaded
    except (OSError, ValueError, RuntimeError, EOFError) as err:
        raise _unreadable(err) from None
    return RequestMedia(data=data) if data else None


TEXT_ALIGNED = ("cross_attention_mask",)
"""Processor tensors whose second dimension runs along the prompt (Llama 3.2 Vision): left-padded with the
ids, cut to the prompt, as `generate` reads them from the end."""


def _left_aligned(tensor: Any, length: int, width: int) -> Any:
    """A (1, text, ...) tensor cut or extended (its last row repeated, as generate extends it) to `length`
    positions, then zero-padded on the left to `width`."""
    import torch

    if tensor.shape[1] >= length:
        tensor = tensor[:, :length]
    else:
        tensor = torch.cat([tensor, tensor[:, -1:].expand(-1, length - tensor.shape[1], *tensor.shape[2:])], dim=1)
    return torch.nn.functional.pad(tensor, (0, 0) * (tensor.dim() - 2) + (width - length, 0))


def generate_inputs(media: list[RequestMedia], type_key: str | None, input_ids: Any, lengths: list[int],
                    device: Any, dtype: Any) -> dict[str, Any]:
    """generate() keyword arguments for a left-padded batch whose rows carry `media`, in row order
    (`lengths`: each row's prompt length): the processor's tensors (floating ones in the model's dtype)
    and the token types along the rows."""
    import torch

    from lf_models.media import collate_tensors

    width = input_ids.shape[1]
    rows = []
    for item, length in zip(media, lengths, strict=True):
        tensors = dict(item.tensors or {})
        for key in TEXT_ALIGNED:
            if key in tensors:
                tensors[key] = _left_aligned(tensors[key], length, width)
        rows.append(tensors)
    out = {key: value.to(device, dtype) if value.is_floating_point() else value.to(device)
           for key, value in collate_tensors(rows).items()}
    if type_key is not None:
        types = torch.zeros_like(input_ids)
        for row, item in enumerate(media):
            if item.type_ids:
                types[row, width - len(item.type_ids):] = torch.tensor(item.type_ids, dtype=types.dtype)
        out[type_key] = types.to(device)
    return out
