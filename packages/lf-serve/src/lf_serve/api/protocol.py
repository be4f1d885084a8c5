"""Request and response bodies of the OpenAI-compatible API (the subset LF serves, same field names).

Bounds on fields (n, max_tokens, temperature ...) are part of the schema, so a bad value is a 400
before any work, and the published OpenAPI schema says what the server accepts. The caps themselves
live in `lf_serve.limits`, shared with the engine.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from lf_serve.limits import MAX_CHOICES, MAX_N, REPETITION_PENALTY, SEED, stop_problem


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields LF ignores (user, metadata, ...)


class ImageURL(BaseModel):
    url: str = Field(min_length=1)
    detail: str | None = None


class MediaURL(BaseModel):
    url: str = Field(min_length=1)


class InputAudio(BaseModel):
    data: str = Field(min_length=1)
    """The sound file's bytes, base64 encoded."""
    format: str | None = None
    """OpenAI's "wav" or "mp3" (any format soundfile reads is accepted; the bytes decide)."""


class ContentPart(BaseModel):
    """A text part, or a media part: image_url (OpenAI), video_url and audio_url (vLLM's extensions),
    input_audio (OpenAI)."""

    type: Literal["text", "image_url", "video_url", "audio_url", "input_audio"]
    text: str | None = None
    image_url: ImageURL | None = None
    video_url: MediaURL | None = None
    audio_url: MediaURL | None = None
    input_audio: InputAudio | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: dict[str, str]


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(_Open):
    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED[0], le=SEED[1])
    stream: bool = False
    stream_options: StreamOptions | None = None
    repetition_penalty: float | None = Field(default=None, ge=REPETITION_PENALTY[0], le=REPETITION_PENALTY[1])
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    @field_validator("stop")
    @classmethod
    def _stop_caps(cls, stop: str | list[str] | None) -> str | list[str] | None:
        problem = stop_problem(stop)
        if problem:
            raise ValueError(problem)
        return stop


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(min_length=1)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _choice_cap(cls, prompt: str | list[str], info: ValidationInfo) -> str | list[str]:
        count, n = (1 if isinstance(prompt, str) else len(prompt)), info.data.get("n", 1)
        if count * n > MAX_CHOICES:
            raise ValueError(f"n={n} answers to each of {count} prompts make {count * n}; a request gets at most "
                             f"{MAX_CHOICES} (send fewer prompts per request).")
        return prompt


class ScoreRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[str] = Field(min_length=1)
    max_length: int | None = Field(default=None, ge=1)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lf"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ScoreResponse(BaseModel):
    id: str
    object: Literal["score.evaluation"] = "score.evaluation"
    model: str
    scores: list[float]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
