"""The bundled SmolLM2-135M-Instruct served by `lf api`'s app and asked through the openai client:
greedy, it knows the capital of France. The inference examples parse as valid configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lf_data.config import read_config
from lf_serve.args import parse_serve_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "examples" / "inference").glob("*.yaml")))
def test_inference_examples_are_valid_configs(name, tmp_path):
    config = read_config(REPO / "examples" / "inference" / name)
    if config.get("adapter_name_or_path"):  # the adapter appears once the quickstart has run
        config["adapter_name_or_path"] = str(tmp_path)
    plan = parse_serve_config(config, name)
    assert plan.model.model_name_or_path == "smollm2-135m-instruct"


@pytest.mark.slow
def test_smollm2_answers_paris_through_the_openai_client(tmp_path_factory, monkeypatch):
    openai = pytest.importorskip("openai")
    from serve_helpers import Server

    from lf_serve import load_engine
    from lf_serve.api.app import create_app

    monkeypatch.setenv("LF_CACHE_HOME", os.environ.get("LF_CACHE_HOME") or str(tmp_path_factory.mktemp("lf-cache")))
    engine = load_engine(read_config(REPO / "examples" / "inference" / "smollm2.yaml",
                                     ["temperature=0", "max_new_tokens=24"]))
    try:
        assert engine.template.name == "smollm2" and engine.model_name == "smollm2-135m-instruct"
        with Server(create_app(engine)) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
            question = [{"role": "user", "content": "What is the capital of France?"}]
            reply = client.chat.completions.create(model="smollm2-135m-instruct", messages=question, temperature=0)
            assert "Paris" in reply.choices[0].message.content
            streamed = client.chat.completions.create(model="smollm2-135m-instruct", messages=question,
                                                      temperature=0, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            assert text == reply.choices[0].message.content

            # tools: left to itself the model answers in text; tool_choice=required makes it call the tool
            tools = [{"type": "function", "function": {
                "name": "get_weather", "description": "Current weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
            weather = [{"role": "user", "content": "What is the weather in Paris?"}]
            auto = client.chat.completions.create(model="smollm2-135m-instruct", messages=weather, tools=tools,
                                                  temperature=0, max_tokens=12)
            assert auto.choices[0].message.tool_calls is None and auto.choices[0].message.content
            forced = client.chat.completions.create(model="smollm2-135m-instruct", messages=weather, tools=tools,
                                                    temperature=0, tool_choice="required")
            assert forced.choices[0].finish_reason == "tool_calls"
            (call,) = forced.choices[0].message.tool_calls
            assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    finally:
        engine.close()
