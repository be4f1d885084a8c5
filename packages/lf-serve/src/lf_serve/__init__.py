"""LF serving: chat engines (transformers, vLLM), an OpenAI-compatible API and terminal chat.

    from lf_serve import load_engine
    engine = load_engine({"model_name_or_path": "smollm2-135m-instruct", "temperature": 0})
    print(engine.chat([{"role": "user", "content": "What is the capital of France?"}])[0].text)

Importing this package is light (no torch): engines load their libraries when they are built.
"""

from typing import TYPE_CHECKING, Any

from lf_serve.args import GeneratingArguments, InferArguments
from lf_serve.errors import ContextLengthError, RequestError, UnsupportedError

if TYPE_CHECKING:
    from lf_serve.engine import ChatEngine, Response, load_engine

_FROM_ENGINE = ("ChatEngine", "Response", "load_engine")

__version__ = "0.1.0"
__all__ = ["ChatEngine", "ContextLengthError", "GeneratingArguments", "InferArguments", "RequestError", "Response",
           "UnsupportedError", "load_engine"]


def __getattr__(name: str) -> Any:
    """The engine module (asyncio, the templates, tool formats: 60 ms) loads on first use, so `lf --help`
    and commands other than serving do not pay for it."""
    if name in _FROM_ENGINE:
        from lf_serve import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'lf_serve' has no attribute {name!r}")
