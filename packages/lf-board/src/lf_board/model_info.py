"""What the board can tell about a model reference without loading it: the chat template its
family uses (a suggestion the person may override) and the models it can offer by name."""

from __future__ import annotations

import json
from pathlib import Path


def bundled_models() -> list[str]:
    from lf_models.bundled import BUNDLED_MODELS

    return list(BUNDLED_MODELS)


def model_type(reference: str) -> str | None:
    """`config.model_type` of a local folder, a cached hub model, or a GGUF file's architecture."""
    path = Path(reference).expanduser()
    if reference.endswith(".gguf"):
        return _gguf_architecture(path) if path.is_file() else None
    config_file: Path | None = path / "config.json" if path.is_dir() else None
    if config_file is None and "/" in reference and not reference.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(reference, "config.json")
        except Exception:  # a malformed id: no suggestion, the run's own checks will say why
            cached = None
        config_file = Path(cached) if isinstance(cached, str) else None
    if config_file is None or not config_file.is_file():
        return None
    try:
        return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError):
        return None


def _gguf_architecture(path: Path) -> str | None:
    try:
        import gguf

        field = gguf.GGUFReader(path).fields.get("general.architecture")
        return bytes(field.parts[field.data[0]]).decode() if field is not None else None
    except Exception:  # not a readable GGUF file: no suggestion
        return None


def suggest_template(reference: str | None) -> str | None:
    """The lf-data template of the model's family, or None when the board cannot tell."""
    if not reference:
        return None
    from lf_models.bundled import BUNDLED_MODELS

    if reference in BUNDLED_MODELS:
        return BUNDLED_MODELS[reference].template
    kind = model_type(reference)
    if kind is None:
        return None
    from lf_models.families import FAMILIES

    family = FAMILIES.get(kind)
    return family.template if family is not None else None
