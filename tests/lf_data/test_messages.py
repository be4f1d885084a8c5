"""The one message model: OpenAI-style messages <-> LF standard messages, and every tool format
reading back exactly what it writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lf_data.messages import (
    ASSISTANT_SIDE,
    OPENAI_ROLES,
    USER_SIDE,
    MessageError,
    check_turns,
    dump_calls,
    from_openai,
    load_calls,
    to_openai,
    to_openai_tool_calls,
)
from lf_data.templates import TOOL_FORMATS

CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


def test_importing_brings_no_torch():
    code = "import sys, lf_data.messages; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_roles():
    assert USER_SIDE == ("user", "observation") and ASSISTANT_SIDE == ("assistant", "function")
    assert OPENAI_ROLES == {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                            "tool": "observation", "observation": "observation", "function": "function"}


@pytest.mark.parametrize(("messages", "expected"), [
    ([{"role": "user", "content": "Hi"}], ([{"role": "user", "content": "Hi"}], None)),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello"}],
     ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "Be brief.")),
    ([{"role": "developer", "content": None}, {"role": "user", "content": None}],
     ([{"role": "user", "content": ""}], "")),
    ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}, {"type": "text", "text": "b"}]}],
     ([{"role": "user", "content": "ab"}], None)),
    ([{"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": None, "tool_calls": [
          {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
     ([{"role": "user", "content": "Weather?"}, {"role": "function", "content": '{"name": "get_weather", '
                                                                                 '"arguments": {"city": "Paris"}}'},
       {"role": "observation", "content": "sunny"}], None)),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": ""}}, {"name": "b", "arguments": {"k": 1}}]}],
     ([{"role": "user", "content": "x"},
       {"role": "function", "content": '[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": 1}}]'}], None)),
    ([{"role": "observation", "content": "r"}, {"role": "function", "content": '{"name": "a"}'}],
     ([{"role": "observation", "content": "r"}, {"role": "function", "content": '{"name": "a"}'}], None)),
])
def test_from_openai(messages, expected):
    assert from_openai(messages) == expected
    assert from_openai(expected[0]) == (expected[0], None)  # LF's own roles pass unchanged


@pytest.mark.parametrize(("messages", "error"), [
    (["hi"], r"messages\[0\] must be an object with a `role`"),
    ([{"role": "robot", "content": "a"}], r"messages\[0\]: unknown role 'robot'"),
    ([{"role": ["user"], "content": "a"}], r"messages\[0\]: unknown role \['user'\]"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], r"messages\[1\]: a system message may only"),
    ([{"role": "user", "content": 3}], r"messages\[0\]: content must be text"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], r"messages\[0\]: only text"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": "{"}}]}],
     r"messages\[1\]: tool call arguments must be JSON"),
    ([{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}], r"messages\[0\]: each tool call needs"),
])
def test_from_openai_errors(messages, error):
    with pytest.raises(MessageError, match=error):
        from_openai(messages)


def test_other_content_parts_go_through_the_hook():
    messages = [{"role": "user", "content": [{"type": "text", "text": "See "}, {"type": "image_url", "image_url": {"url": "u"}}]}]
    seen = []
    assert from_openai(messages, lambda i, part: seen.append((i, part)) or "<image>") == \
        ([{"role": "user", "content": "See <image>"}], None)
    assert seen == [(0, {"type": "image_url", "image_url": {"url": "u"}})]
    system = [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]
    with pytest.raises(MessageError, match="images go in user messages"):
        from_openai(system, lambda i, part: "<image>")


def test_check_turns():
    check_turns([{"role": "user", "content": ""}, {"role": "function", "content": ""},
                 {"role": "observation", "content": ""}, {"role": "assistant", "content": ""}])
    with pytest.raises(MessageError) as err:
        check_turns([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert str(err.value) == ("message 1: role 'user' is out of order; user (or observation) and assistant "
                              "(or function) messages must alternate, starting with the user")


def test_calls_content_round_trip():
    two = [CALL, {"name": "now", "arguments": {}}]
    assert dump_calls([CALL]) == '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert load_calls(dump_calls([CALL])) == [CALL] and load_calls(dump_calls(two)) == two
    with pytest.raises(MessageError, match="must be JSON"):
        load_calls("get_weather(city='Paris')")
    with pytest.raises(MessageError, match="needs a `name`"):
        load_calls('{"arguments": {}}')


def test_to_openai_is_the_inverse():
    standard = [{"role": "user", "content": "Weather?"}, {"role": "function", "content": dump_calls([CALL])},
                {"role": "observation", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]
    shaped = to_openai(standard, "SYS")
    assert shaped == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Weather?"},
                      {"role": "assistant", "content": "",
                       "tool_calls": [{"type": "function", "function": CALL}]},
                      {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]
    assert from_openai(shaped) == (standard, "SYS")


def test_to_openai_tool_calls():
    (out,) = to_openai_tool_calls([CALL])
    assert out["id"].startswith("call_") and out["type"] == "function"
    assert out["function"] == {"name": "get_weather", "arguments": json.dumps(CALL["arguments"])}
    assert to_openai_tool_calls([{"name": "a", "arguments": '{"x": 1}'}])[0]["function"]["arguments"] == '{"x": 1}'


CALL_SETS = [
    [CALL],
    [CALL, {"name": "now", "arguments": {}}],
    [{"name": "sum.v2", "arguments": {"numbers": [1, 2.5], "nested": {"ok": True, "none": None}}}],
    [{"name": "echo", "arguments": {"text": "héllo, \"world\"\n</tool_call>"}}],
]


@pytest.mark.parametrize("name", sorted(TOOL_FORMATS))
@pytest.mark.parametrize("calls", CALL_SETS)
def test_every_tool_format_reads_back_what_it_writes(name, calls):
    fmt = TOOL_FORMATS[name]
    text = fmt.format_calls(calls)
    assert fmt.parse_calls(text) == calls
    assert fmt.parse_calls(f"\n {text} \n") == calls
    opening = fmt.call_opening(calls[0]["name"])
    assert text.startswith(opening) and calls[0]["name"] in opening


@pytest.mark.parametrize("name", sorted(TOOL_FORMATS))
def test_tool_formats_leave_answers_alone(name):
    fmt = TOOL_FORMATS[name]
    for text in ["The capital of France is Paris.", "", "get_weather", fmt.format_calls([CALL]) + " and more",
                 'Call {"name": "x", "arguments": {}} now']:
        assert fmt.parse_calls(text) is None, text
