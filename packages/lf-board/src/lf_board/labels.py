"""Components whose texts come from the locale files, remembered so a language switch relabels them."""

from __future__ import annotations

from typing import Any

from lf_board.translations import has, text


class Labels:
    """Makes components labelled from locale keys and relabels all of them in another language.

    A key `k` gives the label; when the locale also has `k.info`, that is the component's help text.
    """

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.entries: list[tuple[Any, dict[str, str]]] = []

    def make(self, cls: type, key: str, attr: str = "label", **kwargs: Any) -> Any:
        keys = {attr: key}
        if attr == "label" and has(f"{key}.info"):
            keys["info"] = f"{key}.info"
        if has(f"{key}.placeholder"):
            keys["placeholder"] = f"{key}.placeholder"
        component = cls(**{a: text(self.lang, k) for a, k in keys.items()}, **kwargs)
        self.entries.append((component, keys))
        return component

    @property
    def components(self) -> list[Any]:
        return [component for component, _ in self.entries]

    def keys(self) -> set[str]:
        return {key for _, keys in self.entries for key in keys.values()}

    def updates(self, lang: str) -> list[Any]:
        import gradio as gr

        return [gr.update(**{a: text(lang, k) for a, k in keys.items()}) for _, keys in self.entries]
