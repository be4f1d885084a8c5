"""Continuous batching in the transformers engine: requests join the running rows at the next step
and leave when done, whatever their sampling options, with the answers each would get alone."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from lf_serve import load_engine
from lf_serve.engine import Sampling
from lf_serve.engines.continuous import Row, processed_scores, supports_continuous_batching

QUESTIONS = [[{"role": "user", "content": q}] for q in
             ("Who are you?", "Tell me a long story about the sea and the wind.", "Hi", "What is 2 + 2?")]
LONG, SHORT = QUESTIONS[0], QUESTIONS[3]  # the tiny model's answers: all the tokens asked for; the second ends at 3
LONG_TOKENS = 60  # the long answer stops at 62 tokens


@pytest.fixture(scope="module")
def engine(tiny_llama):
    engine = load_engine({"model_name_or_path": str(tiny_llama), "template": "chatml", "temperature": 0,
                          "max_new_tokens": 24})
    assert engine.continuous
    yield engine
    engine.close()


def test_a_request_joins_the_running_rows_and_both_answer_as_alone(engine, monkeypatch):
    """Each decoding step takes at least 5 ms here, so that the long answer (0.3 s or more) is still running
    when the short request, sent after its third piece, joins it, however fast or loaded the machine."""
    from lf_serve.engines.continuous import RunningBatch

    step = RunningBatch.step

    def slow_step(self) -> None:
        time.sleep(0.005)
        step(self)

    monkeypatch.setattr(RunningBatch, "step", slow_step)
    long_alone = engine.chat(LONG, max_tokens=LONG_TOKENS)[0]
    short_alone = engine.chat(SHORT, max_tokens=6)[0]
    assert long_alone.completion_tokens == LONG_TOKENS
    steps, prefills = engine.decode_steps, engine.generate_calls
    seen, finished = [], {}

    def long_one() -> None:
        for piece in engine.stream_chat(LONG, max_tokens=LONG_TOKENS):
            seen.append(piece)
        finished["long"] = time.monotonic()

    thread = threading.Thread(target=long_one)
    thread.start()
    deadline = time.monotonic() + 60
    while len(seen) < 3 and time.monotonic() < deadline:  # the long answer is running
        time.sleep(0.001)
    short = engine.chat(SHORT, max_tokens=6)[0]
    finished["short"] = time.monotonic()
    thread.join()
    assert "".join(seen) == long_alone.text and short.text == short_alone.text
    assert finished["short"] < finished["long"]  # it left the batch without waiting for the long one
    assert engine.generate_calls - prefills == 2  # two prefills ...
    assert engine.decode_steps - steps < LONG_TOKENS + 6  # ... sharing decoding steps


def test_rows_with_different_options_share_steps(tiny_llama):
    engine = load_engine({"model_name_or_path": str(tiny_llama), "template": "chatml", "temperature": 0,
                          "max_new_tokens": 12, "batch_wait_ms": 300})
    try:
        alone = [engine.chat(q)[0] for q in QUESTIONS]
        prefills, steps = engine.generate_calls, engine.decode_steps
        options = [{}, {"temperature": 0.9, "top_p": 0.8, "seed": 3}, {"repetition_penalty": 1.3},
                   {"temperature": 1.2, "top_k": 5, "n": 2}]
        results: list = [None] * 4
        barrier = threading.Barrier(4)

        def ask(i: int) -> None:
            barrier.wait()
            results[i] = engine.chat(QUESTIONS[i], **options[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert engine.generate_calls - prefills == 1  # five rows, four option sets: one prefill
        assert engine.decode_steps - steps <= 12
        assert results[0][0].text == alone[0].text  # greedy beside sampled rows is still greedy
        assert len(results[3]) == 2 and all(r.completion_tokens for r in results[3])
        seeded = engine.chat(QUESTIONS[1], temperature=0.9, top_p=0.8, seed=3)[0]
        assert results[1][0].text == seeded.text  # a seed gives the same answer alone or beside others
        penalised = engine.chat(QUESTIONS[2], repetition_penalty=1.3)[0]
        assert results[2][0].text == penalised.text
    finally:
        engine.close()


def _row(**options) -> Row:
    defaults = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "num_beams": 1,
                "repetition_penalty": 1.0, "length_penalty": 1.0}
    return Row(decoder=None, sampling=Sampling(**{**defaults, **options}), cancelled=threading.Event())


def test_processed_scores_equal_transformers_processors_row_by_row():
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(5, 50) * 3
    rows = [_row(do_sample=False, temperature=1.0), _row(temperature=0.7, top_k=5),
            _row(temperature=1.3, top_p=0.6), _row(temperature=0.5, top_k=10, top_p=0.9, repetition_penalty=1.5),
            _row(do_sample=False, repetition_penalty=1.2)]
    rows[3].seen, rows[4].seen = [1, 2, 3, 7, 7], [4, 9]
    got = processed_scores(logits, rows)
    for r, row in enumerate(rows):
        s = row.sampling
        processors = LogitsProcessorList()
        if s.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(s.repetition_penalty))
        if s.do_sample:
            processors += [TemperatureLogitsWarper(s.temperature)]
            processors += [TopKLogitsWarper(s.top_k)] if s.top_k else []
            processors += [TopPLogitsWarper(s.top_p)] if s.top_p < 1 else []
        seen = torch.tensor([row.seen or [0]])
        expected = processors(seen, logits[r:r + 1].clone())[0]
        assert torch.equal(torch.isinf(got[r]), torch.isinf(expected)), r
        kept = ~torch.isinf(expected)
        torch.testing.assert_close(got[r][kept], expected[kept])
    assert int((~torch.isinf(got[1])).sum()) == 5  # top-k 5 kept five


def test_caches_that_cannot_be_stacked_keep_generate_waves():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    small = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2}
    assert supports_continuous_batching(SimpleNamespace(config=LlamaConfig(**small)), 4096)
    window = SimpleNamespace(config=MistralConfig(sliding_window=4096, **small))
    assert supports_continuous_batching(window, 4096)  # a window as long as the context never slides
    assert not supports_continuous_batching(window, 8192)
    sliding = Qwen2Config(use_sliding_window=True, sliding_window=64, max_window_layers=0, **small)
    assert not supports_continuous_batching(SimpleNamespace(config=sliding), 4096)


def test_the_rows_of_one_request_share_one_prefill(engine, monkeypatch):
    alone = engine.chat(LONG, max_tokens=6)[0].text
    shapes = []
    forward = engine.lm.forward
    monkeypatch.setattr(engine.lm, "forward", lambda *a, **k: shapes.append(tuple(k["input_ids"].shape)) or forward(*a, **k))
    greedy = engine.chat(LONG, n=3, max_tokens=6)
    assert [r.text for r in greedy] == [alone] * 3
    assert shapes[0][0] == 1 and shapes[1] == (3, 1)  # one prompt prefilled, three rows decoded
    sampled = engine.chat(LONG, n=3, max_tokens=6, temperature=1.5, top_p=1.0, seed=11)
    assert len({r.text for r in sampled}) > 1  # the copies draw apart
    assert [r.text for r in engine.chat(LONG, n=3, max_tokens=6, temperature=1.5, top_p=1.0, seed=11)] == \
        [r.text for r in sampled]
