"""The transformers engine: CPU or GPU, token-by-token streaming, and continuous batching.

One background thread owns the model. On text models whose cache can be stacked by rows (most
decoder-only models: `continuous.supports_continuous_batching`), requests join the running batch at
the next decoding step and leave it as soon as they finish, whatever their sampling options
(`lf_serve.engines.continuous`); beam search runs alone between two steps. Other models (media
models, sliding-window or linear-attention caches) batch in waves: the worker groups the requests
with equal sampling options that arrive within `batch_wait_ms` and runs each group as one
left-padded `generate` call, a stopping criterion feeding each row's new tokens to its decoder.
Either way a row's decoder streams its text and applies eos, stop strings, its own `max_tokens`
and its client's disconnect; at most `max_batch_size` sequences run together.

The worker thread also loads the model (merging adapters) and computes reward scores: every torch
operation of the engine runs in that one thread. On a CPU, torch's OpenMP runtime keeps a team of
threads for each thread that has run a parallel operation; once the teams together outnumber the
cores, an idle team thread sleeps after about a hundred spins instead of waiting for the next
operation, and every small parallel operation of a decoding step waits for one to wake. SmolLM2
with a LoRA adapter merged in the main thread served 16 answers at once at 39 tokens/s on 2 cores,
against 106 when the worker merged it (`bench/serve_engine.py`).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from lf_data.errors import ConfigError
from lf_serve.args import ServePlan
from lf_serve.decoding import RowDecoder
from lf_serve.engine import ChatEngine, Event, GenerationRequest, Sink
from lf_serve.engines.continuous import Row, RunningBatch, supports_continuous_batching
from lf_serve.errors import RequestError
from lf_serve.limits import CHARS_PER_TOKEN, scan
from lf_serve.model_setup import setup_model

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    request: GenerationRequest
    sink: Sink


@dataclass
class _Call:
    """Work other than generation (loading aside) that must run in the worker thread."""

    fn: Callable[[], Any]
    result: Future


def inference_precision(infer_dtype: str):  # -> lf_models.precision.Precision
    from lf_models.precision import Precision, choose_precision

    if infer_dtype == "auto":
        return choose_precision()
    if infer_dtype == "float32":
        return Precision(bf16=False, fp16=False)
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"infer_dtype: {infer_dtype} needs a GPU; on CPU use float32 or auto.")
    return Precision(bf16=infer_dtype == "bfloat16", fp16=infer_dtype == "float16")


def context_length(config: Any, tokenizer: Any) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 4096


class HuggingfaceEngine(ChatEngine):
    def __init__(self, plan: ServePlan) -> None:
        self.plan = plan
        self.generating = plan.generating
        self.model_name = plan.model_name()
        self.generate_calls = 0
        """How many batched prefills (continuous) or generate calls (waves) ran: tests check that
        concurrent requests share them."""
        self.decode_steps = 0
        """Continuous batching: how many decoding steps ran (each gives every running row a token)."""
        self._jobs: queue.Queue[_Job | _Call | None] = queue.Queue()
        self._pending: deque[_Job] = deque()
        self._closed = False
        loaded: Future = Future()
        self._worker = threading.Thread(target=self._own_model, args=(loaded,), name="lf-serve-engine", daemon=True)
        self._worker.start()
        loaded.result()  # a loading error is raised here, in the caller's thread
        atexit.register(self.close)  # a worker killed inside torch at exit aborts the process

    def _own_model(self, loaded: Future) -> None:
        """The worker thread's life: load the model, then serve it until the engine closes."""
        try:
            self._load()
        except BaseException as err:  # noqa: BLE001 - the caller of __init__ raises it
            loaded.set_exception(err)
            return
        loaded.set_result(None)
        self._work()

    def _load(self) -> None:
        import torch

        from lf_models.loader import load_model

        plan = self.plan
        setup = setup_model(plan)
        self.tokenizer, self.template, self.tool_format = setup.tokenizer, setup.template, setup.tool_format
        self.eos_ids = setup.eos_ids
        model = load_model(plan.model, plan.finetuning, inference_precision(plan.infer.infer_dtype),
                           is_trainable=False, source=setup.source, tokenizer=self.tokenizer,
                           add_value_head=plan.infer.stage == "rm")
        if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
            model = model.to("cuda")
        self.model = model.eval()
        self.lm = model.pretrained_model if plan.infer.stage == "rm" else model
        self.device = next(model.parameters()).device
        self.max_model_len = context_length(self.lm.config, self.tokenizer)
        from lf_serve.multimodal import family_markers, media_inputs

        adapters = list(reversed(plan.model.adapter_name_or_path or []))  # the last adapter's processor first
        self.media = media_inputs(family_markers(self.lm.config), self.tokenizer, plan.model, adapters,
                                  setup.source.path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.continuous = self.media is None and supports_continuous_batching(self.lm, self.max_model_len)
        """Continuous batching (else waves of generate calls)."""
        self.packed_layers = 0
        """How many linear layers run through oneDNN with packed weights (`cpu_packed_linear`)."""
        if self.continuous and plan.infer.cpu_packed_linear and self.device.type == "cpu":
            from lf_serve.engines.cpu_linear import pack_linear_layers

            self.packed_layers = pack_linear_layers(self.lm)

    # -- the batching worker ------------------------------------------------------------------------
    def _start(self, request: GenerationRequest, sink: Sink) -> None:
        if self._closed:
            raise RuntimeError("this engine is closed")
        self._jobs.put(_Job(request, sink))

    def _in_worker(self, fn: Callable[[], Any]) -> Any:
        """fn's result, computed in the worker thread between two decoding steps."""
        if self._closed:
            raise RuntimeError("this engine is closed")
        call = _Call(fn, Future())
        self._jobs.put(call)
        return call.result.result()

    def _next_job(self, block: bool = True, timeout: float | None = None) -> _Job | None:
        """The next queued request (None: the engine is closing), running queued calls on the way;
        raises queue.Empty as `Queue.get` does."""
        while True:
            job = self._jobs.get(block, timeout)
            if not isinstance(job, _Call):
                return job
            try:
                job.result.set_result(job.fn())
            except Exception as err:  # the caller raises it
                job.result.set_exception(err)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._worker.is_alive():
            self._jobs.put(None)
            self._worker.join(timeout=30)

    def _collect(self) -> list[_Job] | None:
        """The next batch: the oldest pending job, plus every compatible job arriving within the wait."""
        limit = self.plan.infer.max_batch_size
        if not self._pending:
            job = self._next_job()
            if job is None:
                return None
            self._pending.append(job)
        deadline = time.monotonic() + self.plan.infer.batch_wait_ms / 1000
        while sum(j.request.n for j in self._pending) < limit:
            remaining = deadline - time.monotonic()
            try:
                job = self._next_job(timeout=remaining) if remaining > 0 else self._next_job(block=False)
            except queue.Empty:
                break
            if job is None:
                self._closed = True
                break
            self._pending.append(job)
        first = self._pending[0]
        key = self._batch_key(first.request)
        batch, rows, rest = [], 0, deque()
        for job in self._pending:
            if job.request.cancelled.is_set():
                job.sink(Event(index=0, finish_reason="cancelled"))
                continue
            fits = rows + job.request.n <= limit or not batch
            if fits and self._batch_key(job.request) == key:
                batch.append(job)
                rows += job.request.n
            else:
                rest.append(job)
        self._pending = rest
        return batch

    @staticmethod
    def _batch_key(request: GenerationRequest) -> tuple:
        # a seeded request runs alone, so the same seed gives the same answer whatever else is queued
        alone = id(request) if request.sampling.seed is not None or request.sampling.num_beams > 1 else None
        return request.sampling, request.skip_special_tokens, request.media is not None, alone

    def _work(self) -> None:
        if self.continuous:
            self._work_continuously()
            return
        while True:
            batch = self._collect()
            if batch is None:
                return
            if not batch:
                if self._closed and not self._pending:
                    return
                continue
            self._run_wave(batch)
            if self._closed and not self._pending and self._jobs.empty():
                return

    def _run_wave(self, batch: list[_Job]) -> None:
        try:
            self._generate(batch)
        except Exception as err:  # reported to every waiting client, the worker keeps serving
            self._report(batch, err)

    @staticmethod
    def _report(jobs: list[_Job], err: Exception) -> None:
        logger.exception("generation failed")
        for job in jobs:
            job.sink(Event(index=0, error=RequestError(f"generation failed: {type(err).__name__}: {err}")
                           if isinstance(err, ValueError) else err))

    # -- continuous batching ------------------------------------------------------------------------
    def _receive(self, wait: bool) -> bool:
        """Move queued jobs to the pending line (waiting for the first, then `batch_wait_ms` for
        others, when `wait`); False once the engine is closing."""
        try:
            job = self._next_job(block=wait)
        except queue.Empty:
            return True
        deadline = time.monotonic() + self.plan.infer.batch_wait_ms / 1000
        while job is not None:
            self._pending.append(job)
            remaining = deadline - time.monotonic() if wait else 0
            try:
                job = self._next_job(timeout=remaining) if remaining > 0 else self._next_job(block=False)
            except queue.Empty:
                return True
        self._closed = True
        return False

    def _work_continuously(self) -> None:
        import torch

        batch = RunningBatch(self.lm, self.device, self.pad_id)
        limit, closing = self.plan.infer.max_batch_size, False
        while True:
            idle = not len(batch) and not self._pending
            if idle and closing:
                return
            closing = not self._receive(wait=idle and not closing) or closing
            joining: list[Row] = []
            prompts: list[list[int]] = []
            while self._pending:  # first come, first joined: a large `n` is not overtaken
                job = self._pending[0]
                if job.request.cancelled.is_set():
                    self._pending.popleft()
                    job.sink(Event(index=0, finish_reason="cancelled"))
                    continue
                if job.request.sampling.num_beams > 1:  # beam search runs alone, between two steps
                    self._pending.popleft()
                    self._run_wave([job])
                    continue
                if (len(batch) or joining) and len(batch) + len(joining) + job.request.n > limit:
                    break
                self._pending.popleft()
                joining += self._rows(job)
                prompts += [job.request.prompt_ids] * job.request.n
            try:
                with torch.inference_mode():
                    if joining:
                        self.generate_calls += 1
                        batch.join(joining, prompts)
                    if len(batch):
                        self.decode_steps += 1
                        batch.step()
            except Exception as err:  # every running request hears of it; the worker keeps serving
                failed = {id(row.owner): row.owner for row in batch.fail() + joining}
                self._report(list(failed.values()), err)

    def _rows(self, job: _Job) -> list[Row]:
        import torch

        request = job.request
        generator = None
        if request.sampling.seed is not None:  # the request's own draws: the same answer beside any others
            generator = torch.Generator(device=self.device).manual_seed(request.sampling.seed)
        return [Row(self._decoder(job, i), request.sampling, request.cancelled, generator, owner=job)
                for i in range(request.n)]

    # -- one batched generate -----------------------------------------------------------------------
    def _generate(self, batch: list[_Job]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        rows: list[tuple[_Job, int]] = [(job, i) for job in batch for i in range(job.request.n)]
        decoders = [self._decoder(job, i) for job, i in rows]
        width = max(len(job.request.prompt_ids) for job, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (job, _) in enumerate(rows):
            ids = job.request.prompt_ids
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids):] = 1
        sampling = batch[0].request.sampling
        beams = sampling.num_beams > 1

        class RowStops(StoppingCriteria):
            """Feeds each row's newest token to its decoder; a row ends at eos, a stop string, its own
            max_tokens or when its client has gone."""

            def __call__(self, ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
                done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
                last = ids[:, -1].tolist()
                for r, (decoder, (job, _)) in enumerate(zip(decoders, rows, strict=True)):
                    if not decoder.done and job.request.cancelled.is_set():
                        decoder.finish("cancelled")
                    done[r] = decoder.feed(last[r])
                return done

        options: dict[str, Any] = {
            "max_new_tokens": max(job.request.max_new_tokens for job, _ in rows),
            "do_sample": sampling.do_sample, "num_beams": sampling.num_beams,
            "repetition_penalty": sampling.repetition_penalty, "eos_token_id": sorted(self.eos_ids),
            "pad_token_id": self.pad_id,
        }
        if sampling.do_sample:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        if beams:
            options.update(length_penalty=sampling.length_penalty, num_return_sequences=batch[0].request.n)
            input_ids, attention = input_ids[:1], attention[:1]  # beams batch alone: one prompt, n best beams
        else:
            options["stopping_criteria"] = StoppingCriteriaList([RowStops()])
        if batch[0].request.media is not None:  # a batch is all media requests or none (_batch_key)
            from lf_serve.multimodal import generate_inputs

            jobs = [job for job, _ in rows[:len(input_ids)]]
            options.update(generate_inputs([job.request.media for job in jobs], self.media.type_key, input_ids,
                                           [len(job.request.prompt_ids) for job in jobs], self.device, self.lm.dtype))
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(sampling.seed)
        self.generate_calls += 1
        with torch.inference_mode():
            out = self.lm.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                   **options)
        generated = out[:, width:].tolist()
        for decoder, tokens in zip(decoders, generated, strict=True):
            for token in tokens if beams else []:
                if decoder.feed(token):
                    break
            if not decoder.done:
                decoder.finish("length")

    def _decoder(self, job: _Job, index: int) -> RowDecoder:
        request = job.request

        def emit(text: str, finish: str | None, count: int) -> None:
            job.sink(Event(index=index, text=text, finish_reason=finish, completion_tokens=count))

        return RowDecoder(self.tokenizer, self.eos_ids, request.stop, request.max_new_tokens,
                          request.skip_special_tokens, emit)

    # -- reward scores ------------------------------------------------------------------------------
    def get_scores(self, texts: list[str], max_length: int | None = None) -> list[float]:
        """The reward model's score of each text: the value head at its last token."""
        if self.plan.infer.stage != "rm":
            return super().get_scores(texts, max_length)
        import torch

        if not texts or not all(isinstance(t, str) and t for t in texts):
            raise RequestError("messages must be a non-empty list of non-empty texts to score.", "messages")
        limit = min(max_length or self.max_model_len, self.max_model_len)
        for i, text in enumerate(texts):
            scan(text, f"messages[{i}]", "messages")  # a lone surrogate is a 400, not a tokenizer TypeError
        # text holds far more than one token per CHARS_PER_TOKEN characters: cutting it first keeps the
        # same first `limit` tokens without tokenising megabytes
        rows = [self.tokenizer.encode(text[:CHARS_PER_TOKEN * limit], add_special_tokens=False)[:limit]
                for text in texts]

        def score() -> list[float]:
            scores = []
            with torch.inference_mode():
                for ids in rows:
                    tensor = torch.tensor([ids], dtype=torch.long, device=self.device)
                    _, values = self.model(input_ids=tensor, attention_mask=torch.ones_like(tensor))
                    scores.append(float(values[0, -1]))
            return scores

        return self._in_worker(score)  # the worker owns the model: one forward at a time, in its thread
