"""Which chat template a model uses when the config names none, read from its files without loading it.

One answer for `lf train`, `lf chat`/`lf api`, `lf export`, `lf data check` and the board's suggestion:
a bundled model's own template; a multimodal family's template (their own chat templates expect
list content, not the `<image>` placeholders of LlamaFactory-format rows); else none when the
tokenizer carries a chat template (template
`auto` renders with it: the model's authors know it best, e.g. a Llama 2 folder is `llama` too);
else the template of the model's family (`config.model_type`, see `lf_models.families`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def _local_or_cached(reference: str, filename: str) -> Path | None:
    """`filename` in a local folder, or in the hub cache for a hub id (never downloaded)."""
    path = Path(reference).expanduser()
    if path.is_dir():
        return path / filename if (path / filename).is_file() else None
    if "/" not in reference or reference.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(reference, filename)
    except Exception:  # a malformed id: nothing known, the loader's own checks say why
        return None
    return Path(cached) if isinstance(cached, str) else None


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def model_type(reference: str) -> str | None:
    """`config.model_type` of a local folder, a cached hub model, or a GGUF file's architecture."""
    if reference.endswith(".gguf"):
        path = Path(reference).expanduser()
        return _gguf_architecture(path) if path.is_file() else None
    return _read_json(_local_or_cached(reference, "config.json")).get("model_type")


def _gguf_architecture(path: Path) -> str | None:
    try:
        import gguf

        field = gguf.GGUFReader(path).fields.get("general.architecture")
        return bytes(field.parts[field.data[0]]).decode() if field is not None else None
    except Exception:  # not a readable GGUF file: nothing known
        return None


def has_own_chat_template(reference: str) -> bool:
    if _read_json(_local_or_cached(reference, TOKENIZER_CONFIG)).get("chat_template"):
        return True
    return any(_local_or_cached(reference, name) is not None for name in CHAT_TEMPLATE_FILES)


def default_template(reference: str | None) -> str | None:
    """The template a run on `reference` uses when none is configured (None: the tokenizer's own)."""
    if not reference:
        return None
    from lf_models.bundled import BUNDLED_MODELS
    from lf_models.families import FAMILIES

    if reference in BUNDLED_MODELS:
        return BUNDLED_MODELS[reference].template
    family = FAMILIES.get(model_type(reference) or "")
    if family is not None and family.vlm and family.template:
        return family.template  # multimodal chat templates expect list content: LF's own renders <image> rows
    if not reference.endswith(".gguf") and has_own_chat_template(reference):
        return None
    return family.template if family is not None else None
