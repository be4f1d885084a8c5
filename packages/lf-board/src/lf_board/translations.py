"""Every text the board shows comes from one locale file per language (locales/<code>.json)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

LOCALE_DIR = Path(__file__).parent / "locales"
LANGUAGES: dict[str, str] = {"en": "English", "ru": "Русский", "zh": "中文"}
DEFAULT_LANGUAGE = "en"


@cache
def locale(lang: str) -> dict[str, str]:
    """The key -> text table of one language."""
    if lang not in LANGUAGES:
        raise KeyError(f"unknown board language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    return json.loads((LOCALE_DIR / f"{lang}.json").read_text(encoding="utf-8"))


def text(lang: str, key: str, **fields: object) -> str:
    """The text of `key` in `lang` (English when the language lacks it), with {fields} filled in."""
    table = locale(lang if lang in LANGUAGES else DEFAULT_LANGUAGE)
    value = table.get(key) or locale(DEFAULT_LANGUAGE)[key]
    return value.format(**fields) if fields else value


def has(key: str) -> bool:
    return key in locale(DEFAULT_LANGUAGE)
