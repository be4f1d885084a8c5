"""Images for vision-language models: where each image sits in the prompt and what the model receives.

An image is written into a message as lf-data's placeholder `<image>` (the API puts one where each
`image_url` part was; a message without placeholders gets them at the start of the first user turn,
as LLaMA-Factory does). The engine replaces each placeholder with the model's own image marker, encodes
the prompt with the chat template, then repeats the image token once per visual feature the model's
image processor makes of that image, exactly as the model's processor would.

Only the image processor is loaded, not the model's full `AutoProcessor`: for Qwen2-VL that processor
always builds its video processor, which needs torchvision, and serving takes no videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lf_serve.errors import RequestError

IMAGE_PLACEHOLDER = "<image>"
"""lf-data's image placeholder (lf_data.aligner.PLACEHOLDERS["images"])."""


@dataclass(frozen=True)
class VisionFormat:
    marker: str
    """What one image becomes in the prompt text, before expansion."""
    image_token: str
    """The token that stands for one visual feature; repeated once per feature."""

    def feature_counts(self, processed: dict[str, Any], processor: Any) -> list[int]:
        """Visual features per image: the patch grid, merged `merge_size` x `merge_size` (Qwen2-VL)."""
        merge = int(getattr(processor, "merge_size", 1)) ** 2
        return [int(grid.prod()) // merge for grid in processed["image_grid_thw"]]


VISION_FORMATS: dict[str, VisionFormat] = {
    "qwen2_vl": VisionFormat(marker="<|vision_start|><|image_pad|><|vision_end|>", image_token="<|image_pad|>"),
}
"""By `config.model_type`: the VLM families whose images lf-serve can feed."""


def place_images(messages: list[dict[str, str]], count: int, marker: str) -> list[dict[str, str]]:
    """Messages with each `<image>` placeholder replaced by the model's marker; `count` images and no
    placeholder put every image at the start of the first user message."""
    found = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if found == 0:
        first = next((i for i, m in enumerate(messages) if m["role"] == "user"), 0)
        messages = [dict(m) for m in messages]
        messages[first]["content"] = IMAGE_PLACEHOLDER * count + messages[first]["content"]
    elif found != count:
        raise RequestError(f"the messages hold {found} {IMAGE_PLACEHOLDER} placeholder(s) but {count} image(s) "
                           f"came with them; give one placeholder per image, or none.", "messages")
    return [{**m, "content": m["content"].replace(IMAGE_PLACEHOLDER, marker)} for m in messages]


class ImageInputs:
    """The image side of one served VLM: its format, image processor and image token id."""

    def __init__(self, fmt: VisionFormat, processor: Any, tokenizer: Any) -> None:
        self.format, self.processor = fmt, processor
        self.image_id = tokenizer.convert_tokens_to_ids(fmt.image_token)
        if not isinstance(self.image_id, int) or self.image_id == tokenizer.unk_token_id:
            from lf_data.errors import ConfigError

            raise ConfigError(f"the tokenizer has no {fmt.image_token} token, which this model's images need; "
                              "serve the tokenizer the model was trained with.")

    def expand(self, prompt_ids: list[int], images: list[Any]) -> tuple[list[int], dict[str, Any] | None]:
        """Prompt ids with each image token repeated per feature, and the processor's tensors (None without
        images). A prompt whose image tokens do not match the images (typed into the text) is refused."""
        present = prompt_ids.count(self.image_id)
        if present != len(images):
            raise RequestError(f"the prompt holds {present} {self.format.image_token} token(s) for {len(images)} "
                               "image(s); send images as image_url parts (or <image> placeholders), not as the "
                               "model's own image tokens.", "messages")
        if not images:
            return prompt_ids, None
        try:
            processed = self.processor(images=images, return_tensors="pt")
        except (ValueError, TypeError, OSError) as err:
            raise RequestError(f"an image could not be prepared for this model: {err}", "messages") from None
        counts = iter(self.format.feature_counts(processed, self.processor))
        ids: list[int] = []
        for token in prompt_ids:
            ids += [token] * next(counts) if token == self.image_id else [token]
        return ids, dict(processed)

    def model_inputs(self, input_ids: Any, tensors: list[dict[str, Any]], device: Any) -> dict[str, Any]:
        """generate() keyword arguments for a batch whose rows carry these images, in row order."""
        import torch

        out = {key: torch.cat([t[key] for t in tensors]).to(device) for key in tensors[0]}
        out["mm_token_type_ids"] = (input_ids == self.image_id).long().to(device)  # M-RoPE: 1 on image tokens
        return out


def load_image_inputs(config: Any, tokenizer: Any, folders: list[str]) -> ImageInputs | None:
    """ImageInputs for a VLM whose format is known, else None (a text model, or a VLM family lf-serve
    cannot feed yet). The image processor comes from the first of `folders` (adapter, then model
    folder or hub id) that has one."""
    from lf_models.families import family_for

    family = family_for(config)
    fmt = VISION_FORMATS.get(getattr(config, "model_type", ""))
    if family is None or not family.vlm or fmt is None:
        return None
    from transformers import AutoImageProcessor

    from lf_data.errors import ConfigError
    from lf_models.media import PROCESSOR_FILES

    for folder in folders:
        if Path(folder).is_dir() and not any(Path(folder, name).is_file() for name in PROCESSOR_FILES):
            continue
        try:
            return ImageInputs(fmt, AutoImageProcessor.from_pretrained(folder), tokenizer)
        except (OSError, ValueError) as err:
            raise ConfigError(f"could not load the image processor of {folder!r}: {err}") from None
    raise ConfigError(f"the vision-language model in {folders[-1]!r} has no preprocessor_config.json (its image "
                      "processor); copy it from the original model folder.")
