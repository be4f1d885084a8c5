"""What the board can tell about a model reference without loading it: the models it can offer by
name, and the chat template a run would use (`lf_models.default_template`, the same answer as
`lf train`'s)."""

from __future__ import annotations


def bundled_models() -> list[str]:
    from lf_models.bundled import BUNDLED_MODELS

    return list(BUNDLED_MODELS)


def suggest_template(reference: str | None) -> str | None:
    """The template `lf train` picks for this model when none is set (None: the tokenizer's own)."""
    from lf_models.default_template import default_template

    return default_template(reference)
