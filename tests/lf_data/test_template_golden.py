"""Golden renderings: each family's documented format written out by hand for one conversation.

The conversation: system "SYS", user "Hi", assistant "Hello", user "Bye", assistant "Ciao", with
bos "<s>" and eos "</s>" for the templates that use the tokenizer's own special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lf_data.templates import TEMPLATES

TOKENIZER = SimpleNamespace(bos_token="<s>", eos_token="</s>")
MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]


def im(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


def chatml(system: str) -> str:
    return im("system", system) + im("user", "Hi") + im("assistant", "Hello") + im("user", "Bye") + im("assistant", "Ciao")


def llama3_turn(role: str, content: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"


def idefics3(start: str) -> str:  # Idefics3/SmolVLM's own template with text turns
    turns = [("System", "SYS"), ("User", "Hi"), ("Assistant", "Hello"), ("User", "Bye"), ("Assistant", "Ciao")]
    return start + "".join(f"{role}: {text}<end_of_utterance>\n" for role, text in turns)


GOLDEN = {
    "idefics3": idefics3("<s>"), "smolvlm": idefics3("<|im_start|>"),
    "empty": "SYSHiHelloByeCiao",
    "default": "System: SYS\nHuman: Hi\nAssistant: Hello</s>\nHuman: Bye\nAssistant: Ciao</s>\n",
    "alpaca": "SYS\n\n### Instruction:\nHi\n\n### Response:\nHello</s>\n\n### Instruction:\nBye\n\n### Response:\nCiao</s>\n\n",
    "vicuna": "SYS USER: Hi ASSISTANT:Hello</s>USER: Bye ASSISTANT:Ciao</s>",
    "chatml": chatml("SYS"), "qwen": chatml("SYS"), "yi": chatml("SYS"), "smollm2": chatml("SYS"),
    "intern2": "<s>" + chatml("SYS"),
    "qwen3": chatml("SYS").replace("assistant\nCiao", "assistant\n<think>\n\n</think>\n\nCiao"),
    "qwen3_nothink": chatml("SYS"),  # Qwen3-Instruct-2507: no think block anywhere
    "llama2": "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST] Ciao </s>",
    "llama3": "<|begin_of_text|>" + llama3_turn("system", "SYS") + llama3_turn("user", "Hi")
              + llama3_turn("assistant", "Hello") + llama3_turn("user", "Bye") + llama3_turn("assistant", "Ciao"),
    "llama4": "<|begin_of_text|><|header_start|>system<|header_end|>\n\nSYS<|eot|>"
              "<|header_start|>user<|header_end|>\n\nHi<|eot|><|header_start|>assistant<|header_end|>\n\nHello<|eot|>"
              "<|header_start|>user<|header_end|>\n\nBye<|eot|><|header_start|>assistant<|header_end|>\n\nCiao<|eot|>",
    "mistral": "<s>[INST] SYS\n\nHi[/INST] Hello</s>[INST] Bye[/INST] Ciao</s>",
    "mixtral": "<s>[INST] SYS\n\nHi [/INST]Hello</s>[INST] Bye [/INST]Ciao</s>",
    "mistral_small": "<s>[SYSTEM_PROMPT]SYS[/SYSTEM_PROMPT][INST]Hi[/INST]Hello</s>[INST]Bye[/INST]Ciao</s>",
    "gemma": "<bos><start_of_turn>user\nSYS\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
             "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nCiao<end_of_turn>\n",
    "phi": "<|system|>\nSYS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n"
           "<|assistant|>\nCiao<|end|>\n",
    "phi4": "<|im_start|>system<|im_sep|>SYS<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>"
            "<|im_start|>assistant<|im_sep|>Hello<|im_end|><|im_start|>user<|im_sep|>Bye<|im_end|>"
            "<|im_start|>assistant<|im_sep|>Ciao<|im_end|>",
    "phi4_mini": "<|system|>SYS<|end|><|user|>Hi<|end|><|assistant|>Hello<|end|><|user|>Bye<|end|><|assistant|>Ciao<|end|>",
    "deepseek": "<s>SYS\n\nUser: Hi\n\nAssistant: Hello</s>User: Bye\n\nAssistant: Ciao</s>",
    "deepseek3": "<｜begin▁of▁sentence｜>SYS<｜User｜>Hi<｜Assistant｜>Hello<｜end▁of▁sentence｜>"
                 "<｜User｜>Bye<｜Assistant｜>Ciao<｜end▁of▁sentence｜>",
    "deepseekr1": "<｜begin▁of▁sentence｜>SYS<｜User｜>Hi<｜Assistant｜>Hello<｜end▁of▁sentence｜>"
                  "<｜User｜>Bye<｜Assistant｜><think>\n\n</think>\n\nCiao<｜end▁of▁sentence｜>",
    "deepseekcoder": "<s>SYS\n### Instruction:\nHi\n### Response:\nHello\n<|EOT|>\n### Instruction:\nBye\n"
                     "### Response:\nCiao\n<|EOT|>\n",
    "glm4": "[gMASK]<sop><|system|>\nSYS<|user|>\nHi<|assistant|>\nHello<|user|>\nBye<|assistant|>\nCiao",
    "baichuan2": "SYS<reserved_106>Hi<reserved_107>Hello</s><reserved_106>Bye<reserved_107>Ciao</s>",
    "falcon": "SYS\nUser: Hi\nFalcon:Hello\nUser: Bye\nFalcon:Ciao\n",
    "zephyr": "<|system|>\nSYS</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n<|user|>\nBye</s>\n<|assistant|>\nCiao</s>\n",
    "openchat": "<s>GPT4 Correct System: SYS<|end_of_turn|>GPT4 Correct User: Hi<|end_of_turn|>GPT4 Correct Assistant: "
                "Hello<|end_of_turn|>GPT4 Correct User: Bye<|end_of_turn|>GPT4 Correct Assistant: Ciao<|end_of_turn|>",
    "solar": "### System:\nSYS\n\n### User:\nHi\n\n### Assistant:\nHello</s>### User:\nBye\n\n### Assistant:\nCiao</s>",
    "cohere": "<s><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>SYS<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi"
              "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hello<|END_OF_TURN_TOKEN|>"
              "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Bye<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
              "Ciao<|END_OF_TURN_TOKEN|>",
    "granite": "<|start_of_role|>system<|end_of_role|>SYS<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hi"
               "<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>Hello<|end_of_text|>\n"
               "<|start_of_role|>user<|end_of_role|>Bye<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"
               "Ciao<|end_of_text|>\n",
    "gpt_oss": "<|start|>system<|message|>SYS<|end|><|start|>user<|message|>Hi<|end|><|start|>assistant"
               "<|channel|>final<|message|>Hello<|end|><|start|>user<|message|>Bye<|end|><|start|>assistant"
               "<|channel|>final<|message|>Ciao<|end|>",
    "exaone": "[|system|]SYS[|endofturn|]\n[|user|]Hi\n[|assistant|]Hello[|endofturn|]\n[|user|]Bye\n[|assistant|]"
              "Ciao[|endofturn|]\n",
    "starchat": "<|system|>\nSYS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n"
                "<|assistant|>\nCiao<|end|>\n",
    "cpm": "<s>SYS<用户>Hi<AI>Hello</s><用户>Bye<AI>Ciao</s>",
    "yuan": "SYSHi<sep>Hello<eod>Bye<sep>Ciao<eod>",
    "xverse": "SYSHuman: Hi\n\nAssistant: Hello</s>Human: Bye\n\nAssistant: Ciao</s>",
    # -- ChatML variants: the same turns, a family bos or default system aside
    "chatml_de": chatml("SYS"), "dbrx": chatml("SYS"), "smollm": chatml("SYS"),
    "qwen2_vl": chatml("SYS"), "qwen2_audio": chatml("SYS"),
    "cpm3": "<s>" + chatml("SYS"), "intern3": "<s>" + chatml("SYS"),
    "sailor": "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>question\nHi<|im_end|>\n<|im_start|>answer\nHello"
              "<|im_end|>\n<|im_start|>question\nBye<|im_end|>\n<|im_start|>answer\nCiao<|im_end|>\n",
    # -- Llama headers
    "mllama": "<|begin_of_text|>" + llama3_turn("system", "SYS") + llama3_turn("user", "Hi")
              + llama3_turn("assistant", "Hello") + llama3_turn("user", "Bye") + llama3_turn("assistant", "Ciao"),
    "openchat-3.6": "<|begin_of_text|>" + llama3_turn("system", "SYS") + llama3_turn("GPT4 Correct User", "Hi")
                    + llama3_turn("GPT4 Correct Assistant", "Hello") + llama3_turn("GPT4 Correct User", "Bye")
                    + llama3_turn("GPT4 Correct Assistant", "Ciao"),
    "llama2_zh": "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST] Ciao </s>",
    "ministral": "<s>[INST]SYS\n\nHi[/INST]Hello</s>[INST]Bye[/INST]Ciao</s>",
    # -- Gemma: no system role, the system prompt opens the first user turn
    **{name: "<bos><start_of_turn>user\nSYS\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
             "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nCiao<end_of_turn>\n"
       for name in ("gemma2", "gemma3", "gemma3n")},
    "phi_small": "<s><|system|>\nSYS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n"
                 "<|assistant|>\nCiao<|end|>\n",
    "granite3": "<|start_of_role|>system<|end_of_role|>SYS<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hi"
                "<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>Hello<|end_of_text|>\n"
                "<|start_of_role|>user<|end_of_role|>Bye<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"
                "Ciao<|end_of_text|>\n",
    # -- GLM: the answer starts on a new line after <|assistant|>; GLM-4.5 writes an (empty) think block first
    "chatglm3": "[gMASK]sop<|system|>\nSYS<|user|>\nHi<|assistant|>\nHello<|user|>\nBye<|assistant|>\nCiao",
    "codegeex4": "[gMASK]<sop><|system|>\nSYS<|user|>\nHi<|assistant|>\nHello<|user|>\nBye<|assistant|>\nCiao",
    "glm4_moe": "[gMASK]<sop><|system|>\nSYS<|user|>\nHi<|assistant|>\n<think></think>\nHello<|user|>\nBye"
                "<|assistant|>\n<think></think>\nCiao",
    # -- Hunyuan-A13B: the first user turn continues the system one; later user turns reopen with <|startoftext|>
    "hunyuan": "<|startoftext|>SYS<|extra_4|>Hi<|extra_0|>Hello<|eos|><|startoftext|>Bye<|extra_0|>Ciao<|eos|>",
    # -- OLMo (Tulu format): eos opens the conversation, every turn ends with a newline
    "olmo": "</s><|system|>\nSYS\n<|user|>\nHi\n<|assistant|>\nHello</s>\n<|user|>\nBye\n<|assistant|>\nCiao</s>\n",
    "seed_coder": "<[begin▁of▁sentence]>system\nSYS<[end▁of▁sentence]><[begin▁of▁sentence]>user\nHi<[end▁of▁sentence]>"
                  "<[begin▁of▁sentence]>assistant\nHello<[end▁of▁sentence]><[begin▁of▁sentence]>user\nBye"
                  "<[end▁of▁sentence]><[begin▁of▁sentence]>assistant\nCiao<[end▁of▁sentence]>",
    "telechat": "<_system>SYS<_end><_user>Hi<_bot>Hello<_end><_user>Bye<_bot>Ciao<_end>",
    # -- plain-text and reserved-token families
    "aquila": "System: SYS###Human: Hi###Assistant:Hello###Human: Bye###Assistant:Ciao###",
    "atom": "SYS<s>Human: Hi\n</s><s>Assistant:Hello\n</s><s>Human: Bye\n</s><s>Assistant:Ciao\n</s>",
    "baichuan": "SYS<reserved_102>Hi<reserved_103>Hello</s><reserved_102>Bye<reserved_103>Ciao</s>",
    "belle": "<s>SYSHuman: Hi\n\nBelle: Hello</s>\n\nHuman: Bye\n\nBelle: Ciao</s>\n\n",
    "bluelm": "<s>SYS[|Human|]:Hi[|AI|]:Hello</s>[|Human|]:Bye[|AI|]:Ciao</s>",
    "breeze": "<s>SYS [INST] Hi [/INST] Hello</s>[INST] Bye [/INST] Ciao</s>",
    "index": "<unk>SYSreserved_0Hireserved_1Hello</s>reserved_0Byereserved_1Ciao</s>",
    "orion": "<s>SYSHuman: Hi\n\nAssistant: Hello</s>Human: Bye\n\nAssistant: Ciao</s>",
    "ziya": "SYS<human>:Hi\n<bot>:Hello\n<human>:Bye\n<bot>:Ciao\n",
}
CONFORMANCE_TESTED = {"qwen3", "llama3", "smollm2"}  # token for token in test_template_conformance.py
# compared with LlamaFactory 0.9.5's rendering, differences documented, in test_template_parity.py
PARITY_TESTED = set(json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "templates"
                                / "llamafactory_0.9.5.json").read_text(encoding="utf-8"))["templates"])

# Where the last answer starts in each golden: the generation prompt is everything before it. Most
# answers start right at "Ciao"; these families open the answer with a space, a newline or a reasoning block.
ANSWER_START = {"idefics3": " Ciao", "smolvlm": " Ciao", "llama2": " Ciao", "llama2_zh": " Ciao", "mistral": " Ciao", "deepseek": " Ciao", "openchat": " Ciao",
                "glm4": "\nCiao", "chatglm3": "\nCiao", "codegeex4": "\nCiao",
                "qwen3": "<think>", "deepseekr1": "<think>", "glm4_moe": "\n<think>",
                "gpt_oss": "<|channel|>final<|message|>Ciao"}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_rendering(name):
    pairs = TEMPLATES[name].render_pairs(MESSAGES, "SYS", TOKENIZER)
    assert "".join(p + r for p, r in pairs) == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_generation_prompt(name):
    """The conversation up to the second user turn, ready for the model's answer."""
    golden = GOLDEN[name]
    expected = golden[:golden.rindex(ANSWER_START.get(name, "Ciao"))]
    pairs = TEMPLATES[name].render_pairs(MESSAGES[:3], "SYS", TOKENIZER)
    assert pairs[-1][1] == ""
    assert "".join(p + r for p, r in pairs) == expected


def test_every_template_has_a_golden_or_a_conformance_test():
    uncovered = sorted(set(TEMPLATES) - set(GOLDEN) - CONFORMANCE_TESTED - PARITY_TESTED)
    assert not uncovered, (f"templates with neither a golden rendering nor a conformance test: {uncovered}. "
                           "Add the family's documented rendering to GOLDEN in test_template_golden.py.")
    assert set(GOLDEN) | CONFORMANCE_TESTED <= set(TEMPLATES)


def test_default_system_prompts():
    def first_prompt(name: str) -> str:
        return TEMPLATES[name].render_pairs(MESSAGES[:1], None, TOKENIZER)[0][0]

    assert first_prompt("qwen") == im("system", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.") \
        + im("user", "Hi") + "<|im_start|>assistant\n"
    assert first_prompt("smollm2").startswith(im("system", "You are a helpful AI assistant named SmolLM, trained by "
                                                           "Hugging Face"))
    assert first_prompt("qwen3") == im("user", "Hi") + "<|im_start|>assistant\n"
    assert first_prompt("qwen3_nothink") == im("user", "Hi") + "<|im_start|>assistant\n"
    assert first_prompt("llama2_zh").startswith("<s>[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。")
    assert first_prompt("gemma3") == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert first_prompt("hunyuan") == "<|startoftext|>Hi<|extra_0|>"
    assert first_prompt("zephyr") == "<|user|>\nHi</s>\n<|assistant|>\n"  # zephyr's own template has no default
    dbrx = first_prompt("dbrx")
    assert dbrx.startswith("<|im_start|>system\nYou are DBRX, created by Databricks. You were last updated in December "
                           "2023. You answer questions based on information available up to that point.\nYOU PROVIDE "
                           "SHORT RESPONSES TO SHORT QUESTIONS OR STATEMENTS, but provide thorough responses")
    assert dbrx.endswith("UNLESS THE INFORMATION IS DIRECTLY PERTINENT TO THE USER'S QUERY.<|im_end|>\n"
                         + im("user", "Hi") + "<|im_start|>assistant\n")
    assert "(using markdown for code blocks \u2014 remember to use ``` with code, JSON, and tables)" in dbrx
    assert first_prompt("deepseekcoder").startswith("<s>You are an AI programming assistant, utilizing the Deepseek "
                                                    "Coder model, developed by Deepseek Company,")


CALL = {"role": "function", "content": json.dumps({"name": "add", "arguments": {"a": 1}})}
TOOLS = json.dumps([{"name": "add", "description": "Add.", "parameters": {"type": "object"}}])
TOOL_TURNS = [{"role": "user", "content": "Hi"}, CALL, {"role": "observation", "content": "2"},
              {"role": "assistant", "content": "Done"}]


def test_qwen_tools_are_hermes_style():
    text = "".join(p + r for p, r in TEMPLATES["qwen3"].render_pairs(TOOL_TURNS, None, TOKENIZER, TOOLS))
    tool = '{"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {"type": "object"}}}'
    assert text == (
        "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tool}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call>"
        " XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
        + im("user", "Hi")
        + im("assistant", '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>')
        + im("user", "<tool_response>\n2\n</tool_response>")
        + im("assistant", "<think>\n\n</think>\n\nDone"))


@pytest.mark.parametrize(("name", "call", "result"), [
    ("llama3", '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "add", "parameters": {"a": 1}}<|eot_id|>',
     "<|start_header_id|>ipython<|end_header_id|>\n\n2<|eot_id|>"),
    ("mistral", '[/INST][TOOL_CALLS] [{"name": "add", "arguments": {"a": 1}}]</s>',
     '[TOOL_RESULTS] {"content": 2}[/TOOL_RESULTS]'),
    ("glm4", '<|assistant|>add\n{"a": 1}', "<|observation|>\n2"),
    ("chatml", '<|im_start|>assistant\n{"name": "add", "arguments": {"a": 1}}<|im_end|>\n', im("tool", "2")),
])
def test_tool_calls_and_results_in_the_family_format(name, call, result):
    text = "".join(p + r for p, r in TEMPLATES[name].render_pairs(TOOL_TURNS, None, TOKENIZER, TOOLS))
    assert call in text and result in text


def test_tool_definitions_go_where_the_family_puts_them():
    def first_prompt(name: str) -> str:
        return TEMPLATES[name].render_pairs(TOOL_TURNS[:1], "SYS", TOKENIZER, TOOLS)[0][0]

    assert first_prompt("mistral").startswith('<s>[INST] [AVAILABLE_TOOLS] [{"type": "function", "function": '
                                              '{"name": "add"')
    assert first_prompt("llama3").startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                                             "You have access to the following functions.")
    assert first_prompt("glm4").startswith("[gMASK]<sop><|system|>\nSYS\n\n你是一个名为 ChatGLM 的人工智能助手。")
    assert "\n## add\n\n{\n    \"name\": \"add\"," in first_prompt("glm4")
    assert first_prompt("chatml") == im("system", 'SYS\n\nYou have access to the following tools:\n{"name": "add", '
                                                  '"description": "Add.", "parameters": {"type": "object"}}\n\n'
                                                  "To call tools, reply with one JSON object per call, one per line: "
                                                  '{"name": <tool name>, "arguments": <arguments object>}') \
        + im("user", "Hi") + "<|im_start|>assistant\n"


THINKING = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\nGreet.\n</think>\n\nHello"},
            {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "<think>Part.</think>Ciao"}]


def test_reasoning_is_kept_in_the_last_turn_only():
    text = "".join(p + r for p, r in TEMPLATES["qwen3"].render_pairs(THINKING, None, TOKENIZER))
    assert text == im("user", "Hi") + im("assistant", "Hello") + im("user", "Bye") \
        + im("assistant", "<think>\nPart.\n</think>\n\nCiao")
    pairs = TEMPLATES["qwen3"].render_pairs(THINKING, None, TOKENIZER, enable_thinking=False)
    assert pairs[-1] == (im("user", "Bye") + "<|im_start|>assistant\n<think>\n\n</think>\n\n", "Ciao<|im_end|>\n")
    r1 = "".join(p + r for p, r in TEMPLATES["deepseekr1"].render_pairs(THINKING, None, TOKENIZER))
    assert r1.endswith("<｜Assistant｜>Hello<｜end▁of▁sentence｜><｜User｜>Bye<｜Assistant｜><think>\nPart.\n</think>\n\n"
                       "Ciao<｜end▁of▁sentence｜>")
    oss = "".join(p + r for p, r in TEMPLATES["gpt_oss"].render_pairs(THINKING, None, TOKENIZER))
    assert oss.endswith("<|start|>assistant<|channel|>analysis<|message|>Part.<|end|><|start|>assistant"
                        "<|channel|>final<|message|>Ciao<|end|>")


def test_thinking_is_plain_text_for_families_without_it():
    text = "".join(p + r for p, r in TEMPLATES["chatml"].render_pairs(THINKING, None, TOKENIZER))
    assert "<think>\nGreet.\n</think>\n\nHello" in text


def test_at_least_fifty_templates_with_the_llamafactory_names():
    required = {"default", "empty", "alpaca", "vicuna", "chatml", "llama2", "llama3", "llama4", "mistral", "mixtral",
                "qwen", "qwen2_vl", "qwen3", "qwen3_nothink", "gemma", "gemma2", "gemma3", "phi", "phi4", "deepseek",
                "deepseek3", "deepseekr1", "glm4", "yi", "baichuan2", "intern2", "falcon", "zephyr", "openchat",
                "solar", "cohere", "olmo", "smollm", "smollm2", "granite", "gpt_oss"}
    assert required <= set(TEMPLATES) and len(TEMPLATES) >= 50
