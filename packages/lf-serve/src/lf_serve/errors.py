"""Errors a request can cause. The API turns them into OpenAI-shaped 4xx answers; the engines raise
them before any generation starts, so a bad request never costs model time."""

from __future__ import annotations

from lf_data.errors import LFError


class RequestError(LFError):
    """The request itself is wrong (HTTP 400 by default): roles, sizes, options."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class ContextLengthError(RequestError):
    """The prompt plus the requested tokens do not fit in the model's context."""

    def __init__(self, message: str, param: str | None = "max_tokens") -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class UnsupportedError(RequestError):
    """The request asks for something this engine or model cannot do (images on a text model ...)."""
