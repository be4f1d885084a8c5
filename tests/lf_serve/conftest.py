"""Shared set-up for lf-serve tests: engines over the tiny Llama, a model trained here to call a
tool, and a real uvicorn server on a free port for the official `openai` client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_helpers import (  # noqa: F401 (re-exported for fixtures below)
    IDENTITY_A,
    IDENTITY_Q,
    TOOLS,
    WEATHER_ANSWER,
    WEATHER_CALL,
    WEATHER_Q,
    WEATHER_RESULT,
    Server,
)

MAX_STEPS, SURE = 150, 0.9


@pytest.fixture(scope="session")
def tool_model(tmp_path_factory, tiny_llama, tiny_tokenizer) -> Path:
    """The tiny Llama trained (in seconds) to call get_weather, answer from the tool's result and say
    who it is, with the chatml template (the default JSON tool format): a real model that produces
    real tool calls. Training stops as soon as every answer token is the model's choice with
    probability > SURE (about 30 steps), so greedy decoding reproduces the answers exactly, with a
    margin that left padding and batching cannot flip."""
    import torch
    from transformers import AutoModelForCausalLM

    from lf_data.templates import get_template

    template = get_template("chatml")
    tools = json.dumps(TOOLS)
    conversations = [
        ([{"role": "user", "content": WEATHER_Q}, {"role": "function", "content": json.dumps(WEATHER_CALL)},
          {"role": "observation", "content": WEATHER_RESULT}, {"role": "assistant", "content": WEATHER_ANSWER}], tools),
        ([{"role": "user", "content": IDENTITY_Q}, {"role": "assistant", "content": IDENTITY_A}], None),
    ]
    rows = []
    for messages, tool_text in conversations:
        ids, labels = [], []
        for prompt, response in template.encode_pairs(tiny_tokenizer, messages, None, tool_text):
            ids += prompt + response
            labels += [-100] * len(prompt) + response
        rows.append((ids, labels))
    width = max(len(ids) for ids, _ in rows)  # one right-padded batch of both conversations
    input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    targets = labels[:, 1:]
    scored = targets != -100
    for _ in range(MAX_STEPS):
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
        with torch.no_grad():
            chosen = out.logits[:, :-1].softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        if chosen[scored].min() > SURE:
            break
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    else:
        raise AssertionError(f"the tool model did not learn its answers in {MAX_STEPS} steps "
                             f"(least sure answer token: p={float(chosen[scored].min()):.3f})")
    path = tmp_path_factory.mktemp("tool-model")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tool_engine(tool_model):
    from lf_serve import load_engine

    engine = load_engine({"model_name_or_path": str(tool_model), "template": "chatml", "temperature": 0,
                          "max_new_tokens": 48, "served_model_name": "lumen"})
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_engine(tiny_llama):
    from lf_serve import load_engine

    engine = load_engine({"model_name_or_path": str(tiny_llama), "template": "chatml", "temperature": 0,
                          "max_new_tokens": 16, "served_model_name": "tiny"})
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vlm_engine(tiny_qwen2_vl):
    """The tiny random Qwen2-VL (images and videos), greedy, on the transformers engine."""
    from lf_serve import load_engine

    engine = load_engine({"model_name_or_path": str(tiny_qwen2_vl), "template": "qwen2_vl", "temperature": 0,
                          "max_new_tokens": 12, "batch_wait_ms": 150, "served_model_name": "tiny-vl"})
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tool_server(tool_engine):
    from lf_serve.api.app import create_app

    with Server(create_app(tool_engine, api_key="sk-test")) as server:
        yield server
