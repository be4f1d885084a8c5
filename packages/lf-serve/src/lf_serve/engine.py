"""The chat interface shared by every engine, and what a request becomes before it reaches one.

An engine implements one primitive, `_start(request, sink)`: generate `request.n` sequences and
report them to `sink` as `Event`s (text pieces, then one finishing event per sequence). Everything
users call (chat, stream_chat, their async twins, batch_chat, completions) is built here on top of
it, so the engines cannot disagree about roles, templates, stop words, context limits or tool calls.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from lf_data.errors import ConfigError
from lf_data.literal_text import protect_messages
from lf_data.messages import USER_SIDE, Message, MessageError, check_turns, from_openai
from lf_serve.args import GeneratingArguments, ServePlan
from lf_serve.errors import ContextLengthError, RequestError, UnsupportedError
from lf_serve.limits import CHARS_PER_TOKEN, MIN_SAMPLING_TEMPERATURE, SEED, scan, stop_problem
from lf_serve.tool_calls import parse_tool_calls

if TYPE_CHECKING:
    from lf_serve.multimodal import RequestMedia


@dataclass
class Response:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """"stop" (eos, a stop word or a stop string), "length" (max_new_tokens) or "tool_calls"."""
    tool_calls: list[dict[str, Any]] | None = None
    """With tools: the parsed calls, [{"name", "arguments"}], when the answer is calls."""


@dataclass(frozen=True)
class Sampling:
    """Options that must be equal for requests to share one batched generate call."""

    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    num_beams: int
    repetition_penalty: float
    length_penalty: float
    seed: int | None = None


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    n: int
    max_new_tokens: int
    stop: tuple[str, ...]
    sampling: Sampling
    skip_special_tokens: bool = True
    media: RequestMedia | None = None
    """What the request's images, videos and sounds became for the engine (lf_serve.multimodal)."""
    prompt_text: str | None = None
    answer_prefix: str = ""
    """Text already written at the start of every answer (part of the prompt ids): a forced tool call's opening."""
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Event:
    index: int
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: BaseException | None = None


Sink = Callable[[Event], None]


class _Collector:
    """A sink for whole answers: it keeps the events and wakes the waiting caller once, when every
    row has finished or an error came (not at every token, which would cost a thread switch each)."""

    def __init__(self, rows: int, wake: Callable[[], None]) -> None:
        self.events: list[Event] = []
        self.open_rows = rows
        self.wake = wake

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if event.finish_reason is not None:
            self.open_rows -= 1
        if event.error is not None or self.open_rows <= 0:
            self.wake()

    def result(self) -> list[Event]:
        for event in self.events:
            if event.error is not None:
                raise event.error
        return self.events


GENERATING_KEYS = frozenset(f.name for f in fields(GeneratingArguments))
OVERRIDES = {"do_sample", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "repetition_penalty",
             "length_penalty", "skip_special_tokens", "num_return_sequences", "stop", "seed", "n", "max_tokens"}


class ChatEngine:
    """Chat over one loaded model. Subclasses set the attributes below and implement `_start`."""

    template: Any
    tokenizer: Any
    plan: ServePlan
    generating: GeneratingArguments
    max_model_len: int
    model_name: str
    tool_format: str | None
    media: Any = None
    """lf_models.media.MediaInputs when the model takes media (its family has markers): the markers, the
    limits and, on the transformers engine, the model's processor."""

    @property
    def markers(self) -> dict[str, str]:
        """kind -> the model's marker for one item, for each kind it takes (empty: a text model)."""
        return dict(self.media.markers) if self.media is not None else {}

    # -- the primitive ------------------------------------------------------------------------------
    def _start(self, request: GenerationRequest, sink: Sink) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop background workers (engines that have none need not override this)."""

    def _submit(self, request: GenerationRequest, sink: Sink) -> None:
        """`_start`, after reporting the answer prefix (text the prompt already holds) of every row."""
        if request.answer_prefix:
            for index in range(request.n):
                sink(Event(index=index, text=request.answer_prefix))
        self._start(request, sink)

    # -- building requests --------------------------------------------------------------------------
    @property
    def max_prompt_chars(self) -> int:
        """The longest prompt text a request may bring (`max_prompt_chars`, else 16 x the context)."""
        return getattr(self.plan.infer, "max_prompt_chars", None) or CHARS_PER_TOKEN * self.max_model_len

    def check_prompt(self, messages: Any = None, system: str | None = None, tools: Any = None,
                     prompt: str | None = None) -> None:
        """Refuse lone surrogates and prompts longer than `max_prompt_chars`, by a character count taken
        before any tokenising (a 5 MB message must not cost seconds of tokenizer time)."""
        chars, what, param = 0, "the messages hold", "messages"
        if isinstance(messages, list):
            chars += sum(scan(m, f"messages[{i}]", "messages") for i, m in enumerate(messages))
        if isinstance(system, str):
            chars += scan(system, "the system prompt", "messages")
        if tools:
            chars += scan(tools, "tools", "tools")
        if isinstance(prompt, str):
            chars, what, param = scan(prompt, "the prompt", "prompt"), "the prompt holds", "prompt"
        limit = self.max_prompt_chars
        if chars > limit:
            why = ("max_prompt_chars" if getattr(self.plan.infer, "max_prompt_chars", None) else
                   f"{CHARS_PER_TOKEN} characters per token of the model's {self.max_model_len}-token context; "
                   "max_prompt_chars sets another limit")
            raise ContextLengthError(f"{what} {chars} characters, over this server's limit of {limit} "
                                     f"characters ({why}); shorten the prompt.", param)

    def standard_messages(self, messages: list[dict[str, Any]], system: str | None) -> tuple[list[Message], str | None]:
        """OpenAI-style messages (`lf_data.messages`) -> the template's turns and the system prompt
        (`system` if given, else the messages' own, else the configured default)."""
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list of {role, content} objects.", "messages")
        try:
            out, own_system = from_openai(messages)
            check_turns(out)
        except MessageError as err:
            raise RequestError(str(err), "messages") from None
        if not out:
            raise RequestError("messages holds only a system prompt; add a user message.", "messages")
        if out[-1]["role"] not in USER_SIDE:
            raise RequestError("the last message must be from the user (or a tool result), so the model has "
                               "something to answer.", "messages")
        if system is None:
            system = own_system if own_system is not None else self.plan.data.default_system
        return out, system

    def encode_chat(self, messages: list[dict[str, Any]], system: str | None = None,
                    tools: str | list | None = None, media: dict[str, int] | None = None) -> list[int]:
        """The template's prompt ids; with media (`media`: kind -> item count), each item sits where its
        placeholder is, as one model marker (lf_serve.multimodal.place_media)."""
        from lf_data.errors import DataError

        self.check_prompt(messages, system, tools)
        standard, system = self.standard_messages(messages, system)
        if not self.plan.data.special_tokens_in_content:  # a caller's `<|im_start|>system` stays text
            standard, system = protect_messages(standard, system, self.tokenizer)
        if media and any(media.values()):
            from lf_serve.multimodal import place_media

            standard = place_media(standard, media, self.markers)
        try:
            return self.template.encode_prompt(self.tokenizer, standard, system, tools or None,
                                               enable_thinking=self.plan.data.enable_thinking)
        except DataError as err:
            raise RequestError(str(err), "messages") from None

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - OVERRIDES)
        if unknown:
            raise RequestError(f"unknown generation option(s) {', '.join(unknown)}; known: {', '.join(sorted(OVERRIDES))}.")
        values = {f.name: getattr(self.generating, f.name) for f in fields(GeneratingArguments)}
        values.update({k: v for k, v in overrides.items() if v is not None and k not in ("n", "max_tokens")})
        if overrides.get("n") is not None:
            values["num_return_sequences"] = overrides["n"]
        if overrides.get("max_tokens") is not None:
            values["max_new_tokens"] = overrides["max_tokens"]
        problem = stop_problem(values["stop"]) if isinstance(values["stop"], (str, list, tuple)) else None
        if problem:
            raise RequestError(problem, "stop")
        try:  # a request's options meet the same legal ranges as the config's (repetition_penalty ...)
            replace(self.generating, **{k: v for k, v in values.items() if k in GENERATING_KEYS})
        except ConfigError as err:
            raise RequestError(str(err)) from None
        values["explicit_max"] = overrides.get("max_tokens") is not None or overrides.get("max_new_tokens") is not None
        return values

    def make_request(self, prompt_ids: list[int], **overrides: Any) -> GenerationRequest:
        """Merge request options over the configured defaults and check them against the context."""
        o = self._options(overrides)
        n, max_new = int(o["num_return_sequences"]), int(o["max_new_tokens"])
        if n < 1:
            raise RequestError(f"n={n} must be at least 1.", "n")
        if max_new < 1:
            raise RequestError(f"max_tokens={max_new} must be at least 1.", "max_tokens")
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ContextLengthError(f"the prompt is {len(prompt_ids)} tokens but this model's context is "
                                     f"{self.max_model_len} tokens; shorten the conversation.", "messages")
        if max_new > room:
            if o["explicit_max"]:
                raise ContextLengthError(
                    f"max_tokens={max_new} plus the prompt's {len(prompt_ids)} tokens exceeds this model's context "
                    f"of {self.max_model_len} tokens; ask for at most {room} tokens.")
            max_new = room
        temperature = float(o["temperature"])
        do_sample = bool(o["do_sample"]) and temperature >= MIN_SAMPLING_TEMPERATURE
        seed = o.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not SEED[0] <= seed <= SEED[1]):
            raise RequestError(f"seed must be an integer from {SEED[0]} to {SEED[1]}.", "seed")
        stop = o["stop"] or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        if not all(isinstance(s, str) for s in stop):
            raise RequestError("stop must be a string or a list of strings.", "stop")
        sampling = Sampling(
            do_sample=do_sample, temperature=temperature if do_sample else 1.0,
            top_p=float(o["top_p"]) if do_sample else 1.0, top_k=int(o["top_k"]) if do_sample else 0,
            num_beams=int(o["num_beams"]), repetition_penalty=float(o["repetition_penalty"]),
            length_penalty=float(o["length_penalty"]), seed=seed)
        if sampling.num_beams > 1 and n > sampling.num_beams:
            raise RequestError(f"n={n} answers need num_beams >= n (num_beams={sampling.num_beams}).", "n")
        words = tuple(getattr(self.template, "stop_words", ())) + tuple(stop)
        return GenerationRequest(prompt_ids=list(prompt_ids), n=n, max_new_tokens=max_new, stop=words,
                                 sampling=sampling, skip_special_tokens=bool(o["skip_special_tokens"]))

    def check_media(self, counts: dict[str, int]) -> None:
        """Media (kind -> item count) this model can take, checked before any item is read: a text model,
        or a kind the model's family does not take, is a 400."""
        from lf_serve.multimodal import check_counts

        check_counts(self.model_name, self.markers, counts)

    def _attach_media(self, ids: list[int], refs: dict[str, list[str]]) -> tuple[list[int], RequestMedia | None]:
        """The engine's part: the prompt ids and what the items become for this engine."""
        from lf_serve.multimodal import expand

        return expand(self.media, ids, refs) if self.media is not None else (ids, None)

    def forced_prefix(self, tools: str | list | None, tool_choice: str | dict | None) -> str | None:
        """The answer opening that makes the model call a tool: a named function ({"type": "function",
        "function": {"name"}}) or `required`, which names the tool when there is only one; None for auto
        (and where the tool format has no fixed opening, see `forced_call_prefix`)."""
        from lf_data.errors import DataError
        from lf_data.templates.tools import parse_tools
        from lf_serve.tool_calls import forced_call_prefix

        if tool_choice in (None, "auto", "none"):
            return None
        if not tools:
            raise RequestError("tool_choice asks for a tool call but no tools were given.", "tool_choice")
        try:
            names = [f.get("name") for f in parse_tools(tools) if isinstance(f, dict)]
        except DataError as err:
            raise RequestError(str(err), "tools") from None
        if tool_choice == "required":
            only = names[0] if len(names) == 1 and isinstance(names[0], str) and names[0] else None
            return forced_call_prefix(self.tool_format, only)
        function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise RequestError('tool_choice must be "none", "auto", "required" or {"type": "function", '
                               '"function": {"name": ...}}.', "tool_choice")
        if name not in names:
            raise RequestError(f"tool_choice names {name!r}, which is not among the tools.", "tool_choice")
        return forced_call_prefix(self.tool_format, name)

    def chat_request(self, messages: list[dict[str, Any]], system: str | None = None, tools: str | list | None = None,
                     images: list | None = None, tool_choice: str | dict | None = None, videos: list | None = None,
                     audios: list | None = None, **overrides: Any) -> GenerationRequest:
        """A conversation as a request. `images`, `videos`, `audios`: items in the order of their
        placeholders -- checked request items (the API's), or a Python caller's own paths, URLs, bytes
        or PIL images, read as training reads a dataset's."""
        from lf_serve.multimodal import as_ref

        given = {"images": list(images or []), "videos": list(videos or []), "audios": list(audios or [])}
        self.check_media({kind: len(items) for kind, items in given.items()})
        refs = {kind: [as_ref(kind, item) for item in items] for kind, items in given.items()}
        tools = None if tool_choice == "none" else tools
        ids = self.encode_chat(messages, system, tools, {kind: len(items) for kind, items in refs.items()})
        ids, media = self._attach_media(ids, refs)
        prefix = self.forced_prefix(tools, tool_choice) or ""
        if prefix:
            ids = ids + self.tokenizer.encode(prefix, add_special_tokens=False)
        request = self.make_request(ids, **overrides)
        if media is not None and media.type_ids is not None:  # the forced prefix is text
            media.type_ids = media.type_ids + [0] * (len(ids) - len(media.type_ids))
        request.media, request.answer_prefix = media, prefix
        return request

    def completion_request(self, prompt: str, **overrides: Any) -> GenerationRequest:
        if not isinstance(prompt, str) or not prompt:
            raise RequestError("prompt must be a non-empty string.", "prompt")
        self.check_prompt(prompt=prompt)
        request = self.make_request(self.tokenizer.encode(prompt, add_special_tokens=True), **overrides)
        return replace(request, stop=tuple(s for s in request.stop if s not in getattr(self.template, "stop_words", ())),
                       prompt_text=prompt)

    # -- running requests ---------------------------------------------------------------------------
    def stream_events(self, request: GenerationRequest) -> Iterator[Event]:
        """Events of one request as they come (sync); closing the iterator cancels the request."""
        events: queue.Queue[Event] = queue.Queue()
        self._submit(request, events.put)
        open_rows = request.n
        try:
            while open_rows:
                event = events.get()
                if event.error is not None:
                    raise event.error
                if event.finish_reason is not None:
                    open_rows -= 1
                yield event
        finally:
            request.cancelled.set()

    async def astream_events(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Events of one request as they come (async); cancelling the consumer cancels the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        self._submit(request, sink)
        open_rows = request.n
        try:
            while open_rows:
                event = await events.get()
                if event.error is not None:
                    raise event.error
                if event.finish_reason is not None:
                    open_rows -= 1
                yield event
        finally:
            request.cancelled.set()

    def _responses(self, request: GenerationRequest, events: list[Event], tools: Any) -> list[Response]:
        texts, reasons, counts = [""] * request.n, ["stop"] * request.n, [0] * request.n
        for event in events:
            texts[event.index] += event.text
            counts[event.index] = max(counts[event.index], event.completion_tokens)
            if event.finish_reason is not None:
                reasons[event.index] = event.finish_reason
        out = []
        for text, reason, count in zip(texts, reasons, counts, strict=True):
            calls = parse_tool_calls(text, self.tool_format) if tools else None
            out.append(Response(text=text, prompt_tokens=len(request.prompt_ids), completion_tokens=count,
                                finish_reason="tool_calls" if calls else reason, tool_calls=calls))
        return out

    def run(self, request: GenerationRequest, tools: Any = None) -> list[Response]:
        done = threading.Event()
        collector = _Collector(request.n, done.set)
        self._submit(request, collector)
        try:
            done.wait()
        finally:
            request.cancelled.set()
        return self._responses(request, collector.result(), tools)

    async def arun(self, request: GenerationRequest, tools: Any = None) -> list[Response]:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        collector = _Collector(request.n, wake)
        self._submit(request, collector)
        try:
            await done
        finally:  # a client that went away cancels its rows
            request.cancelled.set()
        return self._responses(request, collector.result(), tools)

    # -- the public interface -----------------------------------------------------------------------
    def chat(self, messages: list[dict[str, Any]], system: str | None = None, tools: str | list | None = None,
             images: list | None = None, **gen_overrides: Any) -> list[Response]:
        """n answers to a conversation (n = num_return_sequences / the `n` override); `videos=` and
        `audios=` go with `images` (see chat_request)."""
        parse = None if gen_overrides.get("tool_choice") == "none" else tools
        return self.run(self.chat_request(messages, system, tools, images, **gen_overrides), parse)

    async def achat(self, messages: list[dict[str, Any]], system: str | None = None, tools: str | list | None = None,
                    images: list | None = None, **gen_overrides: Any) -> list[Response]:
        parse = None if gen_overrides.get("tool_choice") == "none" else tools
        return await self.arun(self.chat_request(messages, system, tools, images, **gen_overrides), parse)

    def stream_chat(self, messages: list[dict[str, Any]], system: str | None = None, tools: str | list | None = None,
                    images: list | None = None, **gen_overrides: Any) -> Iterator[str]:
        """The text of one answer, piece by piece as it is generated."""
        request = self.chat_request(messages, system, tools, images, **{**gen_overrides, "n": 1})
        for event in self.stream_events(request):
            if event.text:
                yield event.text

    async def astream_chat(self, messages: list[dict[str, Any]], system: str | None = None,
                           tools: str | list | None = None, images: list | None = None,
                           **gen_overrides: Any) -> AsyncIterator[str]:
        request = self.chat_request(messages, system, tools, images, **{**gen_overrides, "n": 1})
        async for event in self.astream_events(request):
            if event.text:
                yield event.text

    def batch_chat(self, conversations: list[list[dict[str, Any]]], system: str | None = None,
                   **gen_overrides: Any) -> list[Response]:
        """One answer per conversation; all are submitted at once so the engine batches them."""
        requests = [self.chat_request(c, system, **{**gen_overrides, "n": 1}) for c in conversations]
        events: queue.Queue[tuple[int, Event]] = queue.Queue()
        for i, request in enumerate(requests):
            self._submit(request, lambda event, i=i: events.put((i, event)))
        collected: list[list[Event]] = [[] for _ in requests]
        open_rows = len(requests)
        while open_rows:
            i, event = events.get()
            if event.error is not None:
                for request in requests:
                    request.cancelled.set()
                raise event.error
            collected[i].append(event)
            open_rows -= event.finish_reason is not None
        return [self._responses(r, e, None)[0] for r, e in zip(requests, collected, strict=True)]

    def complete(self, prompt: str, **gen_overrides: Any) -> list[Response]:
        """Plain text continuation of `prompt` (no chat template)."""
        return self.run(self.completion_request(prompt, **gen_overrides))

    def get_scores(self, texts: list[str], max_length: int | None = None) -> list[float]:
        raise UnsupportedError("this server does not serve a reward model; start it with stage: rm and the "
                               "reward adapter (infer_backend: huggingface).", "model")


def load_engine(config: dict[str, Any] | ServePlan, source: str = "") -> ChatEngine:
    """A chat engine for a flat config (model_name_or_path, adapter_name_or_path, template,
    infer_backend, generation keys ...), every key checked before the model loads; or for a plan
    another package built typed (`lf train ... do_predict`)."""
    from lf_serve.args import parse_serve_config
    from lf_serve.engines import ENGINES

    plan = config if isinstance(config, ServePlan) else parse_serve_config(config, source)
    return ENGINES[plan.infer.infer_backend](plan)
