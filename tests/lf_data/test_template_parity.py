"""Every LF template renders what LlamaFactory 0.9.5's template of the same name renders, except the
differences documented here (each with its reason; packages/lf-data/README.md has the table).

The fixture holds LlamaFactory's renderings (`bench/template_parity.py dump`, run in a venv with
llamafactory 0.9.5); this test needs no llamafactory. A new difference fails until it is fixed or
documented in `KNOWN_DIFFERENCES`; a documented difference that went away fails too.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lf_data.errors import ConfigError
from lf_data.templates import TEMPLATES, get_template
from lf_data.templates.registry import ALIASES, MULTIMODAL

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "templates" / "llamafactory_0.9.5.json"
DATA = json.loads(FIXTURE.read_text(encoding="utf-8"))

WITH_SYSTEM = ("one turn, system", "two turns, system", "prompt after history, system")
ANSWERS = ("one turn", "one turn, system", "two turns", "two turns, system", "prompt after history, system")
BASIC = (*ANSWERS, "prompt")
HISTORY = ("two turns", "two turns, system")
TOOLS = ("tools, call, result, answer", "tool result prompt")

THINK_HISTORY = ("LlamaFactory trains an empty thought before every answer and tool call; LF follows the model's "
                 "template, where only the final answer opens with a block")
THINK_WORDS = ("LF writes a dataset's <think> reasoning in the family's own thought words without the blank lines "
               "around it; LlamaFactory keeps the literal text next to its own empty block")
QWEN_TOOLS = ("with tools and no system prompt Qwen's template opens the system turn with '# Tools' (LF); "
              "LlamaFactory writes two blank lines first")
QWEN35_TOOLS = "Qwen3.5's XML tool-call format is not written by LF yet (Hermes JSON calls); " + QWEN_TOOLS
GLM_TOOLS = ("LF joins GLM-4's tool preamble to the system prompt after a blank line and words it as LF's glm4 tool "
             "format does; LlamaFactory joins it with no separator and its own wording")
LLAMA3_TOOLS = ("LF's llama3 tool format puts the tool list before the system prompt; LlamaFactory writes Llama 3.1's "
                "'Cutting Knowledge Date' header after it")
MISTRAL_TOOLS = ("LF puts [AVAILABLE_TOOLS] before the system prompt and writes '[TOOL_CALLS] [' with a space; "
                 "LlamaFactory puts the system prompt first")


def _no_tool_format(fmt: str) -> str:
    return f"LlamaFactory's {fmt} tool format has no LF counterpart yet: LF writes its generic JSON tool prompt"


_RULES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    # reasoning families
    (("qwen3", "qwen3_vl", "qwen3_omni", "keye_vl", "mimo", "mimo_vl", "mimo_v2", "qwen3_5", "qwen3_6"),
     (*HISTORY, "tools, call, result, answer"), THINK_HISTORY),
    (("deepseekr1", "hy3", "youtu", "kimi_vl", "minimax2", "seed_oss", "gemma4", "gemma4n"), HISTORY, THINK_HISTORY),
    (("hy3", "kimi_vl", "mimo_v2", "seed_oss", "gemma4", "gemma4n"), ("reasoning",), THINK_WORDS),
    (("qwen3", "qwen3_vl", "qwen3_omni", "keye_vl", "qwen3_nothink", "qwen3_vl_nothink", "qwen3_omni_nothink"),
     ("tool result prompt",), QWEN_TOOLS),
    (("qwen3_5", "qwen3_6", "qwen3_5_nothink"), ("tool result prompt",), QWEN35_TOOLS),
    (("qwen3_5_nothink",), ("tools, call, result, answer",), QWEN35_TOOLS),
    (("gpt_oss",), (*ANSWERS, "reasoning"),
     "LF follows the harmony format: an answer without reasoning goes straight to the final channel and the last "
     "turn's reasoning is kept; LlamaFactory writes an empty analysis message before every answer"),
    (("glm4_moe", "glm4_5v"), (*ANSWERS, "reasoning"),
     "LF follows GLM-4.5's template (an empty '\\n<think></think>\\n' on answers without reasoning, reasoning "
     "without blank lines); LlamaFactory writes Qwen-style '<think>\\n\\n</think>\\n\\n' blocks"),
    (("glm4_7", "aeva"), (*BASIC, "reasoning"),
     "LF follows GLM-4.7's template: no newline after role tokens, a bare </think> before an answer without "
     "reasoning; LlamaFactory writes newlines after the roles and '</think>\\n'"),
    (("glm4v", "glmz1"), ANSWERS[:4],
     "LF opens the answer with GLM's newline, then the block (only on the final answer); LlamaFactory puts a block "
     "before the newline of every answer"),
    (("ernie_vl",), (*BASIC, "reasoning"),
     "LF puts '\\nAssistant: ' in the prompt and the block after it; LlamaFactory's answer starts with "
     "'\\nAssistant: ', so its empty thought lands before the role"),
    # tools
    (("glm4", "chatglm3", "glm4v", "glmz1", "glm_ocr"), TOOLS, GLM_TOOLS),
    (("glm4_moe", "glm4_5v", "glm4_7", "aeva"), TOOLS, _no_tool_format("glm4_moe")),
    (("llama3", "mllama", "llava_next_llama3", "llama4"), TOOLS, LLAMA3_TOOLS),
    (("mistral", "llava_next_mistral", "llava_next_video_mistral"), ("tools, call, result, answer",), MISTRAL_TOOLS),
    (("ministral", "ministral3", "pixtral", "mistral_small"), TOOLS, MISTRAL_TOOLS),
    (("phi4_mini",), TOOLS, _no_tool_format("Phi-4-mini (<|tool|>)")),
    (("bailing_v2",), TOOLS, _no_tool_format("ling")),
    (("lfm2", "lfm2_vl"), TOOLS, _no_tool_format("lfm2")),
    (("minimax1",), TOOLS, _no_tool_format("minimax1")),
    (("minimax2",), TOOLS, _no_tool_format("minimax2")),
    (("gemma4", "gemma4n"), TOOLS, _no_tool_format("gemma4")),
    (("seed_oss",), TOOLS, _no_tool_format("seed_oss")),
    # plain formats
    (("alpaca", "falcon"), WITH_SYSTEM,
     "LF separates a custom system prompt from the first turn as the default one is; LlamaFactory writes none"),
    (("vicuna", "llava", "llava_next", "llava_next_video", "video_llava"), BASIC,
     "LF writes a space between the system prompt and 'USER:' (Vicuna v1.1's separator); LlamaFactory none"),
    (("breeze",), BASIC,
     "LF writes Breeze's default system prompt and the space after it; LlamaFactory neither (not re-checked "
     "against Breeze's tokenizer)"),
    (("deepseek",), ANSWERS,
     "LF writes DeepSeek-LLM-chat's 'Assistant: ' + answer (the generation prompt stays 'Assistant:'); "
     "LlamaFactory no space"),
    (("deepseekcoder",), BASIC,
     "LF keeps the model's spelling 'Deepseek Coder' and a newline after a custom system prompt; LlamaFactory "
     "writes 'DeepSeek' and none"),
    (("default",), BASIC, "LF's own generic format ends user turns without eos; no model defines this template"),
    (("hunyuan",), (*HISTORY, "prompt after history, system"),
     "LF opens every user turn with <|startoftext|> as Hunyuan-A13B's template does; LlamaFactory only the first"),
    (("index", "solar"), ANSWERS,
     "LF ends each answer with eos; LlamaFactory (efficient_eos) adds eos once at the end of a training row"),
    (("yuan",), ANSWERS, "LlamaFactory writes a newline after <eod>; LF none (not re-checked against Yuan's tokenizer)"),
    (("llama2", "llama2_zh"), ANSWERS,
     "LF writes Llama 2's ' answer </s>' (spaces around the answer, as Meta's chat format); LlamaFactory none"),
    (("olmo",), BASIC,
     "LF follows OLMo's template (<|system|> role, newline before <|assistant|>); LlamaFactory writes neither"),
    (("openchat",), ANSWERS,
     "LF writes OpenChat's 'GPT4 Correct System:' role and a space after 'Assistant:'; LlamaFactory neither"),
    (("openchat-3.6",), WITH_SYSTEM, "LF writes the system prompt as a Llama 3 system turn; LlamaFactory as bare text"),
    (("phi_small",), BASIC,
     "LF opens with bos (<|endoftext|>) as Phi-3-small's template does; LlamaFactory's prefix slot renders nothing"),
    (("seed_coder",), ("one turn", "two turns", "prompt"),
     "LlamaFactory's default system prompt ends in a blank line; LF's does not (not re-checked)"),
    (("smollm2",), ("one turn", "two turns", "prompt"),
     "LF's default system prompt is SmolLM2-Instruct's own (no final period; tests/fixtures/templates/smollm2)"),
    (("smollm",), ("one turn", "two turns", "prompt"),
     "LF gives SmolLM the SmolLM2 default system prompt; LlamaFactory none (not re-checked)"),
    (("starchat",), BASIC, "LF writes StarChat's newline after <|assistant|>; LlamaFactory none"),
    (("zephyr",), BASIC,
     "LF writes Zephyr's newline after each </s> and no default system prompt; LlamaFactory the reverse"),
]

KNOWN_DIFFERENCES: dict[str, dict[str, str]] = {}
"""template -> case -> why LF renders it differently from LlamaFactory 0.9.5."""
for _names, _cases, _reason in _RULES:
    for _name in _names:
        for _case in _cases:
            previous = KNOWN_DIFFERENCES.setdefault(_name, {}).get(_case)
            KNOWN_DIFFERENCES[_name][_case] = f"{previous}; {_reason}" if previous else _reason


def known_difference(name: str, case: str) -> str | None:
    return KNOWN_DIFFERENCES.get(name, {}).get(case)


def lf_rendering(name: str, case: str) -> list[list[str]]:
    entry, spec = DATA["templates"][name], DATA["cases"][case]
    tokenizer = SimpleNamespace(bos_token=entry["bos"], eos_token=entry["lf_eos"])
    pairs = TEMPLATES[name].render_pairs(spec["messages"], spec.get("system"), tokenizer, spec.get("tools"))
    if len(spec["messages"]) % 2:  # a generation prompt: the whole text
        return [["".join(p + r for p, r in pairs), ""]]
    return [list(p) for p in pairs]


RENDERINGS = [(name, case) for name, entry in sorted(DATA["templates"].items()) for case in entry["cases"]]


def test_fixture_is_llamafactory_095_and_covers_every_name():
    assert DATA["llamafactory"] == "0.9.5"
    assert len(DATA["templates"]) == 121
    assert sorted(set(DATA["templates"]) - set(TEMPLATES)) == []  # every LlamaFactory name exists in LF


@pytest.mark.parametrize(("name", "case"), RENDERINGS)
def test_template_renders_like_llamafactory(name, case):
    theirs, ours = DATA["templates"][name]["cases"][case], lf_rendering(name, case)
    reason = known_difference(name, case)
    if reason is None:
        assert ours == theirs, f"{name} / {case}: a new difference from LlamaFactory; fix it or document it"
    else:
        assert ours != theirs, f"{name} / {case}: documented as different ({reason}) but now agrees; drop the entry"


def test_documented_differences_name_real_renderings():
    for name, cases in KNOWN_DIFFERENCES.items():
        assert name in DATA["templates"], name
        assert set(cases) <= set(DATA["templates"][name]["cases"]), name


def test_qwen3_nothink_has_no_think_block_anywhere():
    tokenizer = SimpleNamespace(bos_token=None, eos_token="<|im_end|>")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]
    for name in ("qwen3_nothink", "qwen3_vl_nothink", "qwen3_5_nothink", "qwen3_omni_nothink"):
        text = "".join(p + r for p, r in get_template(name).render_pairs(messages, None, tokenizer))
        assert text == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
                        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nCiao<|im_end|>\n")


def test_aliases_and_multimodal_names():
    assert ALIASES["llava_next_mistral"] == "mistral" and ALIASES["pixtral"] == "ministral"
    for name, target in ALIASES.items():
        a, b = TEMPLATES[name], TEMPLATES[target]
        assert a.format_user == b.format_user and a.format_assistant == b.format_assistant and a.name == name
    assert {"qwen3_vl_nothink", "llava_next", "minicpm_v", "paligemma", "gemma4"} <= MULTIMODAL
    assert set(TEMPLATES) >= MULTIMODAL


def test_unknown_template_lists_names_with_aliases():
    with pytest.raises(ConfigError) as err:
        get_template("qwen3_vl_nothnk")
    message = str(err.value)
    assert "Did you mean 'qwen3_vl_nothink'?" in message
    assert "pixtral (= ministral)" in message and "qwen3_vl (multimodal)" in message
