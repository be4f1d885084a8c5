"""`lf api`'s app driven by the official `openai` client over a real socket: chat (sync, async,
streaming), tools with a model that really calls them, completions, n, usage, auth and errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from serve_helpers import IDENTITY_A, IDENTITY_Q, TOOLS, WEATHER_ANSWER, WEATHER_Q, WEATHER_RESULT

from lf_serve import RequestError

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(tool_server):
    return openai.OpenAI(base_url=tool_server.url + "/v1", api_key="sk-test", max_retries=0, timeout=60)


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["lumen"]


def test_chat_answers_with_usage_and_finish_reason(client, tool_engine):
    reply = client.chat.completions.create(model="lumen", messages=[{"role": "user", "content": IDENTITY_Q}],
                                           temperature=0)
    choice = reply.choices[0]
    assert choice.message.content == IDENTITY_A
    assert choice.finish_reason == "stop"
    prompt_ids = tool_engine.encode_chat([{"role": "user", "content": IDENTITY_Q}])
    answer_ids = tool_engine.tokenizer.encode(IDENTITY_A, add_special_tokens=False)
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.completion_tokens == len(answer_ids) + 1  # the answer and <|im_end|>
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_max_tokens_cuts_with_length_and_stop_cuts_with_stop(client):
    messages = [{"role": "user", "content": IDENTITY_Q}]
    short = client.chat.completions.create(model="lumen", messages=messages, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert IDENTITY_A.startswith(short.choices[0].message.content)
    newer = client.chat.completions.create(model="lumen", messages=messages, temperature=0,
                                           max_completion_tokens=2)
    assert newer.usage.completion_tokens == 2
    stopped = client.chat.completions.create(model="lumen", messages=messages, temperature=0, stop=[","])
    assert stopped.choices[0].message.content == IDENTITY_A.split(",")[0]
    assert stopped.choices[0].finish_reason == "stop"


def test_n_samples_with_a_seed_are_reproducible(client):
    messages = [{"role": "user", "content": "The quick brown"}]
    first = client.chat.completions.create(model="lumen", messages=messages, n=3, temperature=1.5, top_p=1.0, seed=7,
                                           max_tokens=8)
    again = client.chat.completions.create(model="lumen", messages=messages, n=3, temperature=1.5, top_p=1.0, seed=7,
                                           max_tokens=8)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1  # three different samples


def test_streaming_chunks_rebuild_the_answer(client):
    stream = client.chat.completions.create(model="lumen", messages=[{"role": "user", "content": IDENTITY_Q}],
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == IDENTITY_A
    pieces = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3  # token by token, not one block
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_raw_sse_ends_with_done(tool_server):
    body = {"model": "lumen", "messages": [{"role": "user", "content": IDENTITY_Q}], "stream": True, "temperature": 0}
    with httpx.stream("POST", tool_server.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": "Bearer sk-test"}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "stop"


def test_async_client(tool_server):
    async def run():
        client = openai.AsyncOpenAI(base_url=tool_server.url + "/v1", api_key="sk-test", max_retries=0)
        replies = await asyncio.gather(*[client.chat.completions.create(
            model="lumen", messages=[{"role": "user", "content": IDENTITY_Q}], temperature=0) for _ in range(4)])
        stream = await client.chat.completions.create(
            model="lumen", messages=[{"role": "user", "content": IDENTITY_Q}], temperature=0, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return [r.choices[0].message.content for r in replies], text

    answers, streamed = asyncio.run(run())
    assert answers == [IDENTITY_A] * 4
    assert streamed == IDENTITY_A


def test_tool_call_and_tool_result_round_trip(client):
    messages = [{"role": "user", "content": WEATHER_Q}]
    reply = client.chat.completions.create(model="lumen", messages=messages, tools=TOOLS, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT}]
    final = client.chat.completions.create(model="lumen", messages=messages, tools=TOOLS, temperature=0)
    assert final.choices[0].message.content == WEATHER_ANSWER
    assert final.choices[0].finish_reason == "stop"


def test_streamed_tool_call(client):
    stream = client.chat.completions.create(model="lumen", messages=[{"role": "user", "content": WEATHER_Q}],
                                            tools=TOOLS, temperature=0, stream=True)
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == \
        [(0, "get_weather", {"city": "Paris"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_leaves_the_text(client):
    reply = client.chat.completions.create(model="lumen", messages=[{"role": "user", "content": WEATHER_Q}],
                                           tools=TOOLS, tool_choice="none", temperature=0, max_tokens=8)
    assert reply.choices[0].message.tool_calls is None


def test_tool_choice_required_and_named_write_the_call_opening(client, tool_engine):
    """`required` and a named function write the tool format's call opening after the generation prompt
    (with the name when it is known: one tool, or named), and the reply is that opening plus the model's
    continuation, parsed as a call. (The tiny model only completes calls it memorised; the bundled
    SmolLM2 test shows a real model answering in text under auto and calling when forced.)"""
    weather = [{"role": "user", "content": WEATHER_Q}]
    named = '{"name": "get_weather", "arguments":'
    two_tools = TOOLS + [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]
    for tools, choice, opening in [(two_tools, "required", '{"name":'), (TOOLS, "required", named),
                                   (TOOLS, {"name": "get_weather"}, named)]:
        tool_choice = choice if isinstance(choice, str) else {"type": "function", "function": choice}
        request = tool_engine.chat_request(weather, tools=json.dumps(tools), tool_choice=tool_choice)
        opening_ids = tool_engine.tokenizer.encode(opening, add_special_tokens=False)
        assert request.prompt_ids == tool_engine.encode_chat(weather, tools=json.dumps(tools)) + opening_ids
        if tools is two_tools:  # a prompt the tiny model never saw: only the opening is certain
            assert tool_engine.run(request)[0].text.startswith(opening)
            continue
        reply = client.chat.completions.create(model="lumen", messages=weather, tools=tools, temperature=0,
                                               tool_choice=tool_choice)
        assert reply.choices[0].finish_reason == "tool_calls"
        (call,) = reply.choices[0].message.tool_calls  # the opening is not repeated or lost
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        assert reply.usage.prompt_tokens == len(request.prompt_ids)  # the opening counts as prompt
    identity = [{"role": "user", "content": IDENTITY_Q}]
    (text,) = tool_engine.chat(identity, tools=json.dumps(TOOLS), temperature=0, max_tokens=8)
    (forced,) = tool_engine.chat(identity, tools=json.dumps(TOOLS), tool_choice="required", temperature=0,
                                 max_tokens=8)
    assert not text.text.startswith("{") and forced.text.startswith(named)
    streamed = "".join(tool_engine.stream_chat(identity, tools=json.dumps(TOOLS), tool_choice="required",
                                               temperature=0, max_tokens=8))
    assert streamed == forced.text
    with pytest.raises(openai.BadRequestError, match="no tools"):
        client.chat.completions.create(model="lumen", messages=identity, tool_choice="required")
    with pytest.raises(RequestError, match="not among the tools"):
        tool_engine.chat(identity, tools=json.dumps(TOOLS), tool_choice={"type": "function", "function": {"name": "x"}})


def test_completions_endpoint(client, tool_engine):
    reply = client.completions.create(model="lumen", prompt="The quick brown", max_tokens=5, temperature=0)
    expected = tool_engine.complete("The quick brown", max_tokens=5, temperature=0)[0]
    assert reply.choices[0].text == expected.text
    assert reply.usage.completion_tokens == expected.completion_tokens <= 5
    streamed = client.completions.create(model="lumen", prompt="The quick brown", max_tokens=5, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected.text


def _error(excinfo) -> dict:
    return excinfo.value.body if isinstance(excinfo.value.body, dict) and "message" in excinfo.value.body \
        else excinfo.value.response.json()["error"]


def test_errors_are_openai_shaped_4xx(client, tool_server):
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4", messages=user)
    assert exc.value.status_code == 404 and exc.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="lumen", messages=[])
    assert exc.value.status_code == 400 and "messages" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="lumen", messages=[{"role": "assistant", "content": "hi"}])
    assert "user" in exc.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="lumen", messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="lumen", messages=user, max_tokens=10_000)
    assert exc.value.code == "context_length_exceeded" and "512" in exc.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="lumen", messages=user, n=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        openai.OpenAI(base_url=tool_server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert exc.value.status_code == 401

    headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    bad_json = httpx.post(tool_server.url + "/v1/chat/completions", content=b'{"model": "lumen", "messages": [',
                          headers=headers)
    assert bad_json.status_code == 400
    assert set(bad_json.json()["error"]) == {"message", "type", "param", "code"}
    huge = httpx.post(tool_server.url + "/v1/chat/completions", headers=headers,
                      content=b'{"model": "lumen", "messages": [{"role": "user", "content": "' + b"a" * (9 << 20) + b'"}]}')
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"


def test_health_needs_no_key(tool_server):
    assert httpx.get(tool_server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(tool_server.url + "/v1/models").status_code == 401


def test_32_concurrent_streaming_clients_get_complete_answers(tool_server, tool_engine):
    async def one(client):
        stream = await client.chat.completions.create(
            model="lumen", messages=[{"role": "user", "content": IDENTITY_Q}], temperature=0, stream=True)
        chunks = [c async for c in stream]
        return chunks

    async def run():
        client = openai.AsyncOpenAI(base_url=tool_server.url + "/v1", api_key="sk-test", max_retries=0, timeout=120)
        results = await asyncio.gather(*[one(client) for _ in range(32)])
        await client.close()
        return results

    steps_before = tool_engine.decode_steps
    results = asyncio.run(run())
    assert len(results) == 32
    for chunks in results:
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == IDENTITY_A
        assert chunks[-1].choices[0].finish_reason == "stop"
    # continuous batching: clients join the running rows, so far fewer steps than the tokens of 32 answers
    tokens = len(tool_engine.tokenizer.encode(IDENTITY_A, add_special_tokens=False))
    assert tool_engine.decode_steps - steps_before < 32 * tokens / 2
