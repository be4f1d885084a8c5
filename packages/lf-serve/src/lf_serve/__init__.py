"""LF serving: chat engines (transformers, vLLM), an OpenAI-compatible API and terminal chat.

    from lf_serve import load_engine
    engine = load_engine({"model_name_or_path": "smollm2-135m-instruct", "temperature": 0})
    print(engine.chat([{"role": "user", "content": "What is the capital of France?"}])[0].text)

Importing this package is light (no torch): engines load their libraries when they are built.
"""

from lf_serve.args import GeneratingArguments, InferArguments
from lf_serve.engine import ChatEngine, Response, load_engine
from lf_serve.errors import ContextLengthError, RequestError, UnsupportedError

__version__ = "0.1.0"
__all__ = ["ChatEngine", "ContextLengthError", "GeneratingArguments", "InferArguments", "RequestError", "Response",
           "UnsupportedError", "load_engine"]
