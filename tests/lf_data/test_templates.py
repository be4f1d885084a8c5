import json

import pytest

from lf_data.errors import ConfigError, DataError
from lf_data.messages import to_openai
from lf_data.processors import IGNORE_INDEX
from lf_data.processors.supervised import encode_supervised
from lf_data.templates import TEMPLATES, get_template

CONVERSATION = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Lumen."},
    {"role": "user", "content": "Who made you?"},
    {"role": "assistant", "content": "The LF team."},
]
# SmolLM2-135M-Instruct's own chat template, as its tokenizer ships it.
SMOLLM2_JINJA = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


TOOLS = json.dumps([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                                      "parameters": {"type": "object",
                                                                     "properties": {"city": {"type": "string"}}}}},
                     {"name": "add", "description": "Add numbers.", "parameters": {"type": "object"}}])
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris and 2+2?"},
    {"role": "function", "content": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                {"name": "add", "arguments": {"a": 2, "b": 2}}])},
    {"role": "observation", "content": '{"sky": "clear"}'},
    {"role": "function", "content": '{"name": "get_weather", "arguments": {"city": "Lyon"}}'},
    {"role": "observation", "content": "rain"},
    {"role": "assistant", "content": "Clear in Paris, rain in Lyon; 4."},
]
REASONING_CONVERSATION = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "<think>\nA name question.\n</think>\n\nI am Lumen."},
    {"role": "user", "content": "Weather?"},
    {"role": "function", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
    {"role": "observation", "content": "sunny"},
    {"role": "assistant", "content": "<think>Sunny it is.</think>It is sunny."},
]
CONVERSATIONS = {"plain": (CONVERSATION, None), "tools": (TOOL_CONVERSATION, TOOLS),
                 "reasoning": (REASONING_CONVERSATION, TOOLS)}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("system", [None, "Be brief."])
@pytest.mark.parametrize("kind", sorted(CONVERSATIONS))
def test_saved_jinja_renders_exactly_what_training_sees(name, system, kind, tiny_tokenizer):
    template = TEMPLATES[name]
    messages, tools = CONVERSATIONS[kind]
    jinja_tools = {"tools": json.loads(tools)} if tools else {}
    tiny_tokenizer.chat_template = template.to_jinja()
    thinking_options = [None, True, False] if template.thought else [None]
    for thinking in thinking_options:
        options = {} if thinking is None else {"enable_thinking": thinking}
        pairs = template.render_pairs(messages, system, tiny_tokenizer, tools, **options)
        training_text = "".join(p + r for p, r in pairs)
        assert tiny_tokenizer.apply_chat_template(to_openai(messages, system), tokenize=False,
                                                  **jinja_tools, **options) == training_text
        for end in range(1, len(messages), 2):  # every prompt the conversation contains
            prompt_pairs = template.render_pairs(messages[:end], system, tiny_tokenizer, tools, **options)
            prompt_text = tiny_tokenizer.apply_chat_template(to_openai(messages[:end], system), tokenize=False,
                                                             add_generation_prompt=True, **jinja_tools, **options)
            assert prompt_text == "".join(p + r for p, r in prompt_pairs)
            # piece-wise ids may merge differently from the whole text's in this tiny tokenizer; the
            # real tokenizers' ids are compared in test_template_conformance.py
            assert tiny_tokenizer.decode(template.encode_prompt(tiny_tokenizer, messages[:end], system, tools,
                                                                **options)) == prompt_text


def test_smollm2_template_matches_the_models_own(tiny_tokenizer):
    ours = TEMPLATES["smollm2"]
    tiny_tokenizer.chat_template = SMOLLM2_JINJA
    theirs = get_template("auto")
    assert ours.render_pairs(CONVERSATION, None, tiny_tokenizer) == theirs.render_pairs(CONVERSATION, None, tiny_tokenizer)
    assert ours.encode_pairs(tiny_tokenizer, CONVERSATION, "Be brief.") == \
        theirs.encode_pairs(tiny_tokenizer, CONVERSATION, "Be brief.")


def test_auto_template_gives_exact_assistant_labels(tiny_tokenizer):
    tiny_tokenizer.chat_template = SMOLLM2_JINJA
    pairs = get_template("auto").encode_pairs(tiny_tokenizer, CONVERSATION)
    input_ids, labels = encode_supervised(pairs, cutoff_len=1024)
    trained = tiny_tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert trained == "I am Lumen.<|im_end|>\nThe LF team.<|im_end|>\n"
    assert tiny_tokenizer.decode(input_ids) == tiny_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_auto_template_refuses_templates_that_rewrite_history(tiny_tokenizer):
    tiny_tokenizer.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match="rewrites earlier turns"):
        get_template("auto").encode_pairs(tiny_tokenizer, CONVERSATION)
    tiny_tokenizer.chat_template = None
    with pytest.raises(DataError, match="has no chat template"):
        get_template("auto").encode_pairs(tiny_tokenizer, CONVERSATION)


def test_unknown_template_suggests():
    with pytest.raises(ConfigError, match=r"unknown template 'smolm2'. Did you mean 'smollm2'\?"):
        get_template("smolm2")
