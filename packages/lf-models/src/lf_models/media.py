"""Images, videos and audio on their way into a multimodal model.

lf-data writes each `<image>`, `<video>` or `<audio>` placeholder of a row as the family's marker
(`ModelFamily.markers`: the model's own special tokens, one marker per item) and carries the row's
media paths. At batch time `MediaInputs.expand` reads each item -- an image resized within
image_max_pixels/image_min_pixels, a video sampled at video_fps up to video_maxlen frames, a sound
resampled to audio_sampling_rate -- runs the model's own processor on the marker with that one item,
and splices the processor's expansion into the ids where the marker was. The feature tokens are
therefore exactly what the processor writes, they are never trained on (label -100), and the
processor's tensors (pixel_values, image_grid_thw, input_features, ...) go to the model with the batch.

One processor call per item keeps every family on the same path: the processor, not LF, knows how
many tokens an image of a given size becomes (and what text surrounds them, as in Gemma 3).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lf_data.errors import ConfigError, DataError

KINDS = ("images", "videos", "audios")
PROCESSOR_ARGUMENT = {"images": "images", "videos": "videos", "audios": "audio"}
"""The keyword each kind goes to the processor under."""
SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids", "labels")
"""Processor outputs that run along the text (everything else is a media tensor of the batch); PaliGemma's
processor also writes labels (all -100 for a prompt alone), which LF makes itself."""
TYPE_KEYS = ("mm_token_type_ids", "token_type_ids")
PAN_AND_SCAN = ("gemma3",)
"""Families whose processor crops large images (image_do_pan_and_scan)."""
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
"""Where a folder keeps its processor (transformers 5 writes the first, older folders the second)."""
IGNORE_INDEX = -100
EXTRA = {"images": "vision", "videos": "vision", "audios": "audio"}
"""The lf-models extra that brings each kind's readers."""


@dataclass(frozen=True)
class MediaLimits:
    """LlamaFactory's processor keys (ModelArguments): how media is sized before the processor sees it."""

    image_max_pixels: int = 768 * 768
    image_min_pixels: int = 32 * 32
    image_do_pan_and_scan: bool = False
    video_max_pixels: int = 256 * 256
    video_min_pixels: int = 16 * 16
    video_fps: float = 2.0
    video_maxlen: int = 128
    audio_sampling_rate: int = 16000

    @classmethod
    def from_args(cls, model_args: Any) -> MediaLimits:
        return cls(**{name: getattr(model_args, name) for name in cls.__dataclass_fields__
                      if getattr(model_args, name, None) is not None})


def _missing_extra(kind: str, module: str) -> ConfigError:
    return ConfigError(f"reading {kind} needs the {module} package: pip install 'lf-models[{EXTRA[kind]}]'")


def _source(ref: str) -> Any:
    """A local path, or the bytes of a data:/http(s) URL (rows may name either; lf-data checked paths)."""
    if ref.startswith("data:"):
        _, _, payload = ref.partition(",")
        return io.BytesIO(base64.b64decode(payload))
    if ref.startswith(("http://", "https://")):
        from urllib.request import urlopen

        with urlopen(ref, timeout=60) as response:  # noqa: S310 (training data names its own files)
            return io.BytesIO(response.read())
    return ref


def _fit(width: int, height: int, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    """(width, height) scaled, aspect kept, so that the area lies within [min_pixels, max_pixels]."""
    area = width * height
    if area > max_pixels:
        scale = math.sqrt(max_pixels / area)
        return max(1, int(width * scale)), max(1, int(height * scale))
    if area < min_pixels:
        scale = math.sqrt(min_pixels / area)
        return math.ceil(width * scale), math.ceil(height * scale)
    return width, height


def _sized(image: Any, max_pixels: int, min_pixels: int) -> Any:
    size = _fit(*image.size, max_pixels, min_pixels)
    if size != image.size:
        from PIL import Image

        image = image.resize(size, resample=Image.Resampling.BICUBIC)
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(ref: str, limits: MediaLimits = MediaLimits()) -> Any:
    """An RGB PIL image, within the limits."""
    from PIL import Image

    with Image.open(_source(ref)) as image:
        image.load()
        return _sized(image, limits.image_max_pixels, limits.image_min_pixels)


def load_video(ref: str, limits: MediaLimits = MediaLimits()) -> tuple[list[Any], dict[str, Any]]:
    """(frames as RGB PIL images, metadata): video_fps frames per second of video, evenly spaced, at
    most video_maxlen of them, each within the video pixel limits."""
    try:
        import av
    except ImportError:
        raise _missing_extra("videos", "av") from None
    import numpy as np

    def indices_for(total: int, rate: float) -> list[int]:
        wanted = max(1, min(limits.video_maxlen, total, math.floor(total / rate * limits.video_fps) or 1))
        return np.linspace(0, total - 1, wanted).round().astype(int).tolist()

    with av.open(_source(ref)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 0) or 24.0
        total = int(stream.frames or 0)  # from the header when the container records it
        keep = set(indices_for(total, rate)) if total else None
        frames: dict[int, Any] = {}
        count = 0
        for count, frame in enumerate(container.decode(stream), start=1):  # only the sampled frames are kept
            if keep is None or count - 1 in keep:
                frames[count - 1] = frame.to_image()
    if not frames:
        raise ValueError("the video has no frames")
    indices = indices_for(count, rate) if keep is None or count != total else sorted(keep)
    if keep is not None and count != total:  # the header was wrong: sample what was decoded
        indices = [i for i in indices if i in frames] or sorted(frames)
    sampled = [_sized(frames[i], limits.video_max_pixels, limits.video_min_pixels) for i in indices]
    return sampled, {"fps": rate, "total_num_frames": count, "frames_indices": indices, "duration": count / rate}


def load_audio(ref: str, limits: MediaLimits = MediaLimits()) -> Any:
    """A mono float32 waveform at audio_sampling_rate."""
    try:
        import soundfile
    except ImportError:
        raise _missing_extra("audios", "soundfile") from None
    data, rate = soundfile.read(_source(ref), dtype="float32", always_2d=True)
    wave = data.mean(axis=1)
    if rate != limits.audio_sampling_rate:
        try:
            import soxr
        except ImportError:
            raise _missing_extra("audios", "soxr") from None
        wave = soxr.resample(wave, rate, limits.audio_sampling_rate).astype("float32")
    return wave


LOADERS = {"images": load_image, "videos": load_video, "audios": load_audio}


def probe(kind: str, ref: str) -> str | None:
    """Why an item cannot be read (None when it can): cheap checks run on every item before training."""
    if ref.startswith(("http://", "https://")):
        return None  # fetched at batch time
    try:
        if kind == "images":
            from PIL import Image

            with Image.open(_source(ref)) as image:
                image.verify()
        elif kind == "videos":
            try:
                import av
            except ImportError:
                raise _missing_extra(kind, "av") from None
            with av.open(_source(ref)) as container:
                if not container.streams.video:
                    return "it holds no video stream"
        else:
            try:
                import soundfile
            except ImportError:
                raise _missing_extra(kind, "soundfile") from None
            soundfile.info(_source(ref))
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 -- every reader has its own errors; all mean "unreadable"
        return f"{type(err).__name__}: {err}".strip()
    return None


@dataclass
class Expanded:
    """One sequence with its markers expanded, and the processor's tensors for its items in order."""

    input_ids: list[int]
    labels: list[int]
    type_ids: list[int] | None
    tensors: list[dict[str, Any]] = field(default_factory=list)


class MediaInputs:
    """The media side of one multimodal model: its markers, its processor and the limits."""

    def __init__(self, processor: Any, tokenizer: Any, markers: Mapping[str, str],
                 limits: MediaLimits = MediaLimits()) -> None:
        self.processor, self.tokenizer, self.limits = processor, tokenizer, limits
        self.quirks = PROCESSOR_QUIRKS.get(type(processor).__name__, ProcessorQuirks())
        self.markers = {**markers, **{k: v for k, v in self.quirks.markers.items() if k in markers}}
        self.marker_ids: dict[str, list[int]] = {}
        for kind, marker in self.markers.items():
            ids = tokenizer.encode(marker, add_special_tokens=False)
            tokens = tokenizer.convert_ids_to_tokens(ids)
            if "".join(tokens) != marker or tokenizer.unk_token_id in ids:
                raise ConfigError(f"the tokenizer does not hold {marker!r} as special tokens, which this model's "
                                  f"{kind} need; train with the tokenizer the model came with.")
            self.marker_ids[kind] = ids
        self.type_key = next((k for k in TYPE_KEYS if k in getattr(processor, "model_input_names", ())), None)
        self.rope_index = False  # M-RoPE family (set by prepare_media): neat packing computes its positions

    def spans(self, ids: list[int]) -> list[tuple[int, str]]:
        """(position, kind) of every marker in `ids`, in order."""
        found: list[tuple[int, str]] = []
        starts = {marker[0] for marker in self.marker_ids.values()}
        i = 0
        while i < len(ids):
            kind = None
            if ids[i] in starts:
                kind = next((k for k, marker in self.marker_ids.items() if ids[i:i + len(marker)] == marker), None)
            if kind is None:
                i += 1
                continue
            found.append((i, kind))
            i += len(self.marker_ids[kind])
        return found

    def process(self, kind: str, ref: str) -> tuple[list[int], list[int] | None, dict[str, Any]]:
        """(the marker's expansion, its token types, the processor's tensors) for one item."""
        loaded = LOADERS[kind](ref, self.limits)
        options: dict[str, Any] = {}
        if kind == "videos":
            loaded, metadata = loaded
            options["video_metadata"] = [metadata]
            options["do_sample_frames"] = False  # sampled above, at video_fps
        elif kind == "audios":
            options["sampling_rate"] = self.limits.audio_sampling_rate
        elif self.limits.image_do_pan_and_scan:  # Gemma 3: crops of a large image beside the whole one
            options["do_pan_and_scan"] = True
        try:
            out = self.processor(text=[self.markers[kind]], **{PROCESSOR_ARGUMENT[kind]: [loaded]},
                                 return_tensors="pt", add_special_tokens=False, **options)
        except (ValueError, TypeError, RuntimeError) as err:
            raise DataError(f"{kind[:-1]} {ref!r} could not be prepared for this model: {err}") from None
        ids = out["input_ids"][0].tolist()
        types = out[self.type_key][0].tolist() if self.type_key and self.type_key in out else None
        if self.quirks.expansion is not None:
            ids, types = self.quirks.expansion(self, ids, types)
        return ids, types, {k: v for k, v in out.items() if k not in SEQUENCE_KEYS}

    def expand(self, ids: list[int], labels: list[int], media: Mapping[str, list[str]],
               memo: dict[tuple[str, str], Any] | None = None) -> Expanded:
        """`ids` and `labels` with each marker replaced by its item's expansion (labels -100 there);
        `memo` keeps processed items for sequences that share them (a chosen and a rejected answer)."""
        memo = {} if memo is None else memo
        queues = {kind: list(media.get(kind) or []) for kind in KINDS}
        spans = self.spans(ids)
        for kind in KINDS:
            count = sum(1 for _, k in spans if k == kind)
            if count != len(queues[kind]):
                raise DataError(f"a sequence holds {count} {kind[:-1]} marker(s) for {len(queues[kind])} {kind}; "
                                "give one placeholder per item")
        out = Expanded([], [], [] if self.type_key else None)
        start = 0
        for position, kind in spans:
            ref = queues[kind].pop(0)
            if (kind, ref) not in memo:
                memo[kind, ref] = self.process(kind, ref)
            expansion, types, tensors = memo[kind, ref]
            out.input_ids += ids[start:position] + expansion
            out.labels += labels[start:position] + [IGNORE_INDEX] * len(expansion)
            if out.type_ids is not None:
                out.type_ids += [0] * (position - start) + (types or [0] * len(expansion))
            out.tensors.append(tensors)
            start = position + len(self.marker_ids[kind])
        out.input_ids += ids[start:]
        out.labels += labels[start:]
        if out.type_ids is not None:
            out.type_ids += [0] * (len(ids) - start)
        return self.quirks.arrange(self, out) if self.quirks.arrange is not None else out


@dataclass(frozen=True)
class ProcessorQuirks:
    """Where a processor does not simply expand the marker in place (keyed by its class name)."""

    markers: Mapping[str, str] = field(default_factory=dict)
    """Markers that replace the family's: a model type whose checkpoints ship another processor
    (LLaVA with Pixtral's vision tower writes `[IMG]`, not `<image>`)."""
    expansion: Any = None
    """(media, ids, types) -> (ids, types): the part of the processor's output that is the item."""
    arrange: Any = None
    """(media, Expanded) -> Expanded: the whole sequence laid out as the model expects."""


def _image_run(media: MediaInputs, ids: list[int], types: list[int] | None) -> tuple[list[int], list[int] | None]:
    """The item is its image tokens alone: PaliGemma's processor adds bos, the prompt and a newline, Llama 3.2
    Vision's a bos, which LF's template writes itself."""
    count = next((i for i, t in enumerate(ids) if t != media.processor.image_token_id), len(ids))
    return ids[:count], (types[:count] if types is not None else None)


def _images_first(media: MediaInputs, out: Expanded) -> Expanded:
    """PaliGemma's layout: every image's tokens before bos, then the text; the prefix (images and the
    prompt, up to the first trained token) attends both ways (token type 0), the answer causally (1),
    as its processor marks a prefix and a suffix."""
    image = media.processor.image_token_id
    text = [(t, label) for t, label in zip(out.input_ids, out.labels, strict=True) if t != image]
    images = len(out.input_ids) - len(text)
    ids = [image] * images + [t for t, _ in text]
    labels = [IGNORE_INDEX] * images + [label for _, label in text]
    first = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    types = [0] * first + [1] * (len(labels) - first) if out.type_ids is not None else None
    return Expanded(ids, labels, types, out.tensors)


CROSS_ATTENTION_STEP = 64
"""Llama 3.2 Vision's cross_attention_mask runs to a multiple of this, at least as far as the padded batch
(the collator pads to a multiple of 8 or less): the model cuts it to the text."""


def _cross_attention(media: MediaInputs, out: Expanded) -> Expanded:
    """Llama 3.2 Vision: one <|image|> token an image, which the text reaches through cross-attention
    layers. The sequence's images go side by side (1, images, tiles, ...), and its cross_attention_mask
    lets every token from an image's <|image|> on (to the next image's; the last to the end) see that
    image's real tiles, as its processor writes it. A sequence without images holds none (a batch of text
    rows then holds no image tensors: collate_tensors leaves empty ones out)."""
    import torch

    images = media.processor.image_processor
    tiles, size = images.max_image_tiles, images.size
    starts = [i for i, t in enumerate(out.input_ids) if t == media.processor.image_token_id]
    length = -(-len(out.input_ids) // CROSS_ATTENTION_STEP) * CROSS_ATTENTION_STEP
    mask = torch.zeros(1, length, len(out.tensors), tiles, dtype=torch.long)
    for n, (start, item) in enumerate(zip(starts, out.tensors, strict=True)):
        end = starts[n + 1] if n + 1 < len(starts) else length
        mask[0, start:end, n, :int(item["aspect_ratio_mask"].sum())] = 1
    if out.tensors:
        merged = {key: torch.cat([item[key] for item in out.tensors], dim=1)
                  for key in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}
    else:
        merged = {"pixel_values": torch.zeros(1, 0, tiles, 3, size["height"], size["width"]),
                  "aspect_ratio_ids": torch.zeros(1, 0, dtype=torch.long),
                  "aspect_ratio_mask": torch.zeros(1, 0, tiles, dtype=torch.long)}
    return Expanded(out.input_ids, out.labels, out.type_ids, [{**merged, "cross_attention_mask": mask}])


PROCESSOR_QUIRKS = {
    "PixtralProcessor": ProcessorQuirks(markers={"images": "[IMG]"}),
    "PaliGemmaProcessor": ProcessorQuirks(expansion=_image_run, arrange=_images_first),
    "MllamaProcessor": ProcessorQuirks(expansion=_image_run, arrange=_cross_attention),
}


JOINED_FRAMES = ("pixel_values_videos",)
"""(videos, frames, channels, height, width) tensors of models that encode each frame alone and read the
features in order (LLaVA-NeXT-Video): videos of different lengths are joined into one row of all their
frames, since zero-padded frames would be encoded as features no token stands for."""


def collate_tensors(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The tensors of many items as one batch: concatenated along the first dimension, zero-padded
    where the items' other dimensions differ (LLaVA-NeXT's patch counts; its image_sizes say which
    patches are real)."""
    import torch

    keys = list(dict.fromkeys(key for item in items for key in item))
    out: dict[str, Any] = {}
    for key in keys:
        tensors = [item[key] for item in items if key in item]
        if key in JOINED_FRAMES and tensors[0].dim() == 5 and len({t.shape[1] for t in tensors}) > 1:
            out[key] = torch.cat([t.flatten(0, 1) for t in tensors]).unsqueeze(0)  # one row of every frame
            continue
        shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
        padded = []
        for t in tensors:
            pad: list[int] = []
            for d in reversed(range(1, t.dim())):
                pad += [0, shape[d - 1] - t.shape[d]]
            padded.append(torch.nn.functional.pad(t, pad) if any(pad) else t)
        out[key] = torch.cat(padded)
        if not out[key].numel():  # Llama 3.2 Vision: a batch of text rows holds no images
            del out[key]
    return out


def load_media_inputs(reference: str, tokenizer: Any, markers: Mapping[str, str], limits: MediaLimits,
                      folders: list[str] | None = None, trust_remote_code: bool = False) -> MediaInputs:
    """MediaInputs with the model's full processor, from the first of `folders` (an adapter folder may
    carry it) then `reference` that has one; the processor uses `tokenizer`, LF's own."""
    from transformers import AutoProcessor

    candidates = [str(Path(f).expanduser()) for f in (folders or [])
                  if any(Path(f, name).expanduser().is_file() for name in PROCESSOR_FILES)] + [reference]
    origin = candidates[0]
    try:
        processor = AutoProcessor.from_pretrained(origin, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    except ImportError as err:
        extra = "audio" if "audios" in markers and len(markers) == 1 else "vision"
        raise ConfigError(f"the processor of {origin!r} needs a package that is missing ({err}); "
                          f"pip install 'lf-models[{extra}]'") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not load the processor of {origin!r}: {str(err).splitlines()[0]}") from None
    if getattr(processor, "tokenizer", None) is None or isinstance(processor, type(tokenizer)):
        raise ConfigError(f"{origin!r} has no multimodal processor (processor_config.json or "
                          "preprocessor_config.json), which the model needs to read media; copy them from the "
                          "original model folder.")
    return MediaInputs(processor, tokenizer, markers, limits)


MEDIA_PARTS = {"images": ("image", "image_url"), "videos": ("video", "video_url"),
               "audios": ("audio", "input_audio", "audio_url")}
"""The `type`s of message content parts that stand for one item of each media kind (transformers' and OpenAI's)."""


def media_chat_template(chat_template: str, markers: dict[str, str]) -> str:
    """`chat_template` preceded by a step that writes messages whose content is a list of parts
    (`{"type": "image"}`, `{"type": "text", "text": ...}`, as `processor.apply_chat_template` takes them)
    as text: each media part becomes the family's marker, which the processor then expands. LF's own
    templates render text content only; a template that already writes a marker is left alone."""
    if not markers or any(marker in chat_template for marker in markers.values()):
        return chat_template
    branches = "".join(f"{{%- elif part['type'] in {MEDIA_PARTS[kind]!r} -%}}"
                       f"{{%- set part_text.value = part_text.value + {json.dumps(marker)} -%}}"
                       for kind, marker in markers.items() if kind in MEDIA_PARTS)
    prelude = ("{%- set media_messages = namespace(items=[]) -%}"
               "{%- for message in messages -%}"
               "{%- if message['content'] is not defined or message['content'] is string "
               "or message['content'] is none -%}"
               "{%- set media_messages.items = media_messages.items + [message] -%}"
               "{%- else -%}"
               "{%- set part_text = namespace(value='') -%}"
               "{%- for part in message['content'] -%}"
               "{%- if part['type'] == 'text' -%}{%- set part_text.value = part_text.value + part['text'] -%}"
               f"{branches}{{%- endif -%}}"
               "{%- endfor -%}"
               "{%- set media_messages.items = media_messages.items + [dict(message, content=part_text.value)] -%}"
               "{%- endif -%}"
               "{%- endfor -%}"
               "{%- set messages = media_messages.items -%}")
    return prelude + chat_template


def save_processor(media: MediaInputs, folder: str | os.PathLike) -> None:
    """Write the processor's own files (image/video processor, feature extractor) beside the tokenizer,
    so plain transformers' AutoProcessor loads the trained folder."""
    processor = media.processor
    template = getattr(media.tokenizer, "chat_template", None)  # LF's: it takes image/video/audio parts too
    processor.chat_template = media_chat_template(template, media.markers) if template else processor.chat_template
    processor.save_pretrained(str(folder))


PACKING_LEVELS = ("none", "plain", "neat")


def prepare_media(model_args: Any, source_path: str, tokenizer: Any, kinds: set[str], packing: str = "none"
                  ) -> MediaInputs:
    """The MediaInputs of a run whose data carries `kinds`, packed as `packing` says ("none", "plain",
    "neat"): the model's family must take every kind and allow that packing (its config decides, now
    that the model is resolved), and its processor must load. Never silently text-only: anything else
    stops the run before weights load."""
    from transformers import AutoConfig

    from lf_models.families import FAMILIES, family_for

    try:
        config = AutoConfig.from_pretrained(source_path, trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not read the config of {source_path!r}: {str(err).splitlines()[0]}") from None
    family = family_for(config)
    refused = sorted(kinds - set(family.media if family else ()))
    if refused:
        takers = ", ".join(sorted(t for t, f in FAMILIES.items() if set(kinds) <= set(f.media))) or "none yet"
        what = f"takes {' and '.join(family.media)} only" if family and family.media else "takes text only"
        raise ConfigError(f"the data has {' and '.join(refused)} but model {model_args.model_name_or_path!r} "
                          f"(model_type {config.model_type}) {what}: it would train on the placeholder text. Use a "
                          f"model that takes them (families: {takers}) or remove the media column(s) from the "
                          "dataset's entry in dataset_info.json.")
    if PACKING_LEVELS.index(packing) > PACKING_LEVELS.index(family.packing):
        allowed = {"none": "remove packing/neat_packing", "plain": "use packing: true without neat_packing"}
        raise ConfigError(f"{'neat_packing' if packing == 'neat' else 'packing'} with {' and '.join(sorted(kinds))} "
                          f"is not possible for model_type {config.model_type}: {family.packing_reason}; "
                          f"{allowed[family.packing]}.")
    markers = {kind: family.markers[kind] for kind in KINDS if kind in family.markers}
    if getattr(model_args, "image_do_pan_and_scan", False) and config.model_type not in PAN_AND_SCAN:
        raise ConfigError(f"image_do_pan_and_scan is Gemma 3's option; model_type {config.model_type} has no "
                          "pan-and-scan crops. Remove the key.")
    media = load_media_inputs(source_path, tokenizer, markers, MediaLimits.from_args(model_args),
                              folders=list(model_args.adapter_name_or_path or []),
                              trust_remote_code=model_args.trust_remote_code)
    media.rope_index = family.rope_index
    return media


def rope_index_function(model: Any) -> Any:
    """The model's own get_rope_index (M-RoPE positions from the token types and the grids), found
    through a PEFT wrapper; None for a model without one."""
    for module in model.modules():
        if callable(getattr(module, "get_rope_index", None)):
            return module.get_rope_index
    return None


def check_media_files(datasets: list[Any], limit: int = 5) -> None:
    """Every media item of the tokenised datasets can be read, checked before training starts: a
    broken file stops the run now with its path, not hours in (each distinct file is checked once)."""
    seen: set[tuple[str, str]] = set()
    problems: list[str] = []
    count = 0
    for dataset in datasets:
        for kind in KINDS:
            if dataset is None or not hasattr(dataset, "__len__") or kind not in dataset.column_names:
                continue
            for cell in dataset[kind]:
                for ref in json.loads(cell) if cell else []:
                    if (kind, ref) in seen:
                        continue
                    seen.add((kind, ref))
                    why = probe(kind, ref)
                    if why is not None:
                        count += 1
                        if len(problems) < limit:
                            problems.append(f"{kind[:-1]} {ref!r}: {why}")
    if problems:
        more = f"\n  ... and {count - len(problems)} more" if count > len(problems) else ""
        raise DataError(f"{count} media file(s) cannot be read:\n  " + "\n  ".join(problems) + more +
                        "\nReplace or remove them (skip_invalid does not apply to unreadable files).")


def media_for_reference(config: dict[str, Any], tokenizer: Any, kinds: set[str]) -> MediaInputs | None:
    """`lf data check`'s media reader (the `lf.media_readers` entry point): the run config's model,
    resolved as lf train resolves it, so the check shows each item expanded as training will. None for
    a tokenizer-only folder (no model to ask: the placeholders show as written)."""
    reference = Path(str(config.get("model_name_or_path", ""))).expanduser()
    if reference.is_dir() and not (reference / "config.json").is_file():
        return None
    from lf_data.config import build_section
    from lf_models.args import ModelArguments
    from lf_models.loader import resolve_model

    names = ModelArguments.__dataclass_fields__
    model_args = build_section(ModelArguments, {k: v for k, v in config.items() if k in names})
    packing = "neat" if config.get("neat_packing") else "plain" if config.get("packing") else "none"
    return prepare_media(model_args, resolve_model(model_args).path, tokenizer, kinds, packing)
