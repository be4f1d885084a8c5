"""Every engine, by its `infer_backend` name. Each module is imported only when its engine is chosen,
so a vLLM host never imports the transformers generation path and the CPU host never needs vllm."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lf_serve.args import ServePlan
    from lf_serve.engine import ChatEngine


def _huggingface(plan: ServePlan) -> ChatEngine:
    from lf_serve.engines.huggingface import HuggingfaceEngine

    return HuggingfaceEngine(plan)


def _vllm(plan: ServePlan) -> ChatEngine:
    from lf_serve.engines.vllm import VllmEngine

    return VllmEngine(plan)


ENGINES: dict[str, Callable[[ServePlan], ChatEngine]] = {"huggingface": _huggingface, "vllm": _vllm}
