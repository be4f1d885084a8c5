"""Every named chat template, in one place. Names follow LlamaFactory's where one exists, so
existing recipes keep working; formats follow each family's own chat template (special tokens,
newlines, default system prompt, bos, stop words)."""

from __future__ import annotations

import difflib

from lf_data.errors import ConfigError
from lf_data.templates.template import AutoTemplate, Template, Thought

TEMPLATES: dict[str, Template] = {}


def register(template: Template) -> Template:
    if template.name in TEMPLATES:
        raise ValueError(f"template {template.name!r} is registered twice")
    TEMPLATES[template.name] = template
    return template


def get_template(name: str | None) -> Template | AutoTemplate:
    if name in (None, "auto"):
        return AutoTemplate()
    if name not in TEMPLATES:
        close = difflib.get_close_matches(name, list(TEMPLATES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown template {name!r}.{hint} Use `auto` (the tokenizer's own chat template) "
                          f"or one of: {', '.join(sorted(TEMPLATES))}.")
    return TEMPLATES[name]


# -- families built on a shared shape ------------------------------------------------------------
def _chatml(name: str, default_system: str = "", prefix: str = "", **extra) -> Template:
    """`<|im_start|>role\\n...<|im_end|>\\n` (OpenAI ChatML), used by many families."""
    fields = {"format_observation": "<|im_start|>tool\n{content}<|im_end|>\n", **extra}
    return register(Template(
        name=name, prefix=prefix,
        format_system="<|im_start|>system\n{content}<|im_end|>\n",
        format_user="<|im_start|>user\n{content}<|im_end|>\n",
        generation_prompt="<|im_start|>assistant\n",
        format_assistant="{content}<|im_end|>\n",
        default_system=default_system, stop_words=("<|im_end|>",), **fields,
    ))


def _qwen(name: str, default_system: str = "", **extra) -> Template:
    """ChatML with Hermes-style tools; tool results come back as a user turn in <tool_response>."""
    return _chatml(name, default_system, tool_format="qwen",
                   format_observation="<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n",
                   **extra)


def _llama3(name: str, **extra) -> Template:
    """Llama 3 headers; OpenChat 3.6 renames the roles (`user_role`, `assistant_role`)."""
    def turn(r: str) -> str:
        return f"<|start_header_id|>{r}<|end_header_id|>\n\n{{content}}<|eot_id|>"

    return register(Template(
        name=name, prefix="<|begin_of_text|>",
        format_system=turn("system"), format_user=turn(extra.pop("user_role", "user")),
        format_observation=turn("ipython"),
        generation_prompt=f"<|start_header_id|>{extra.pop('assistant_role', 'assistant')}<|end_header_id|>\n\n",
        format_assistant="{content}<|eot_id|>", stop_words=("<|eot_id|>", "<|eom_id|>"), tool_format="llama3", **extra,
    ))


def _gemma(name: str) -> Template:
    """Gemma has no system role: the system prompt opens the first user turn."""
    return register(Template(
        name=name, prefix="<bos>", system_in_user=True, format_system="{content}\n\n",
        format_user="<start_of_turn>user\n{content}<end_of_turn>\n",
        format_observation="<start_of_turn>tool\n{content}<end_of_turn>\n",
        generation_prompt="<start_of_turn>model\n", format_assistant="{content}<end_of_turn>\n",
        stop_words=("<end_of_turn>",),
    ))


def _glm(name: str, default_system: str = "", **extra) -> Template:
    """ChatGLM3 / GLM-4: role tokens, the answer starts on a new line, stop at the next role."""
    return register(Template(
        name=name, prefix="[gMASK]<sop>",
        format_system="<|system|>\n{content}", format_user="<|user|>\n{content}",
        format_observation="<|observation|>\n{content}", generation_prompt="<|assistant|>",
        default_system=default_system, stop_words=("<|user|>", "<|observation|>"), tool_format="glm4",
        **{"format_assistant": "\n{content}", "format_function": "{content}", **extra},
    ))


def _plain(name: str, user: str, assistant: str, generation: str = "", system: str = "{content}",
           **extra) -> Template:
    """Families that mark turns with plain text (Human:/Assistant:, ### Instruction: ...)."""
    return register(Template(name=name, format_user=user, format_assistant=assistant, generation_prompt=generation,
                             format_system=system, **extra))


# -- generic ------------------------------------------------------------------------------------
register(Template(name="empty", format_user="{content}", format_assistant="{content}"))
_plain("default", "Human: {content}\n", "{content}{eos}\n", "Assistant: ", "System: {content}\n")
_plain("alpaca", "### Instruction:\n{content}\n\n", "{content}{eos}\n\n", "### Response:\n", "{content}\n\n",
       default_system="Below is an instruction that describes a task. "
                      "Write a response that appropriately completes the request.")
_plain("vicuna", "USER: {content} ", "{content}{eos}", "ASSISTANT:", "{content} ",
       default_system="A chat between a curious user and an artificial intelligence assistant. "
                      "The assistant gives helpful, detailed, and polite answers to the user's questions.")
_chatml("chatml")
_chatml("chatml_de", "Du bist ein freundlicher und hilfsbereiter KI-Assistent.")

# -- Qwen ---------------------------------------------------------------------------------------
_qwen("qwen", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
_qwen("qwen2_vl", "You are a helpful assistant.")
_qwen("qwen2_audio", "You are a helpful assistant.")
# Qwen3 keeps the reasoning of the current turn only and always opens the final answer with a block
_qwen("qwen3", thought=Thought(always_block=True))
_qwen("qwen3_nothink", thought=Thought(always_block=True), enable_thinking=False)

# -- Llama, Mistral -----------------------------------------------------------------------------
_llama3("llama3")
_llama3("mllama")
_llama3("openchat-3.6", user_role="GPT4 Correct User", assistant_role="GPT4 Correct Assistant")
register(Template(
    name="llama4", prefix="<|begin_of_text|>",
    format_system="<|header_start|>system<|header_end|>\n\n{content}<|eot|>",
    format_user="<|header_start|>user<|header_end|>\n\n{content}<|eot|>",
    format_observation="<|header_start|>ipython<|header_end|>\n\n{content}<|eot|>",
    generation_prompt="<|header_start|>assistant<|header_end|>\n\n", format_assistant="{content}<|eot|>",
    stop_words=("<|eot|>", "<|eom|>"), tool_format="llama3",
))
# Llama 2: the system prompt sits in <<SYS>> inside the first [INST]; every turn opens with <s>
register(Template(
    name="llama2", format_user="{bos}[INST] {content} [/INST]", format_assistant=" {content} {eos}",
    format_system="<<SYS>>\n{content}\n<</SYS>>\n\n", system_in_user=True,
))
register(Template(
    name="llama2_zh", format_user="{bos}[INST] {content} [/INST]", format_assistant=" {content} {eos}",
    format_system="<<SYS>>\n{content}\n<</SYS>>\n\n", system_in_user=True,
    default_system="You are a helpful assistant. 你是一个乐于助人的助手。",
))
register(Template(
    name="mistral", prefix="{bos}", format_user="[INST] {content}[/INST]", format_assistant=" {content}{eos}",
    format_function="{content}{eos}", format_system="{content}\n\n", system_in_user=True,
    format_observation='[TOOL_RESULTS] {"content": {content}}[/TOOL_RESULTS]', tool_format="mistral",
))
register(Template(  # Mixtral-8x7B-Instruct-v0.1: spaces inside [INST] ... [/INST], no system role
    name="mixtral", prefix="{bos}", format_user="[INST] {content} [/INST]", format_assistant="{content}{eos}",
    format_system="{content}\n\n", system_in_user=True, tool_format="mistral",
))
register(Template(  # Ministral (v3 tekken): no spaces around the content
    name="ministral", prefix="{bos}", format_user="[INST]{content}[/INST]", format_assistant="{content}{eos}",
    format_system="{content}\n\n", system_in_user=True, tool_format="mistral",
    format_observation='[TOOL_RESULTS]{"content": {content}}[/TOOL_RESULTS]',
))
register(Template(  # Mistral Small 3 (v7 tekken): a real system prompt
    name="mistral_small", prefix="{bos}", format_system="[SYSTEM_PROMPT]{content}[/SYSTEM_PROMPT]",
    format_user="[INST]{content}[/INST]", format_assistant="{content}{eos}", tool_format="mistral",
    format_observation='[TOOL_RESULTS]{"content": {content}}[/TOOL_RESULTS]',
))

# -- Gemma, Phi ---------------------------------------------------------------------------------
for _name in ("gemma", "gemma2", "gemma3", "gemma3n"):
    _gemma(_name)
register(Template(
    name="phi", format_system="<|system|>\n{content}<|end|>\n", format_user="<|user|>\n{content}<|end|>\n",
    generation_prompt="<|assistant|>\n", format_assistant="{content}<|end|>\n", stop_words=("<|end|>",),
))
register(Template(
    name="phi_small", prefix="{bos}", format_system="<|system|>\n{content}<|end|>\n",
    format_user="<|user|>\n{content}<|end|>\n", generation_prompt="<|assistant|>\n",
    format_assistant="{content}<|end|>\n", stop_words=("<|end|>",),
))
register(Template(
    name="phi4", format_system="<|im_start|>system<|im_sep|>{content}<|im_end|>",
    format_user="<|im_start|>user<|im_sep|>{content}<|im_end|>", generation_prompt="<|im_start|>assistant<|im_sep|>",
    format_assistant="{content}<|im_end|>", stop_words=("<|im_end|>",),
))
register(Template(
    name="phi4_mini", format_system="<|system|>{content}<|end|>", format_user="<|user|>{content}<|end|>",
    generation_prompt="<|assistant|>", format_assistant="{content}<|end|>",
    format_observation="<|tool|>{content}<|end|>", stop_words=("<|end|>",),
))

# -- DeepSeek -----------------------------------------------------------------------------------
_plain("deepseek", "User: {content}\n\n", " {content}{eos}", "Assistant:", "{content}\n\n", prefix="{bos}")
_DEEPSEEK3 = {"prefix": "<｜begin▁of▁sentence｜>", "format_user": "<｜User｜>{content}",
              "generation_prompt": "<｜Assistant｜>", "format_assistant": "{content}<｜end▁of▁sentence｜>"}
register(Template(name="deepseek3", **_DEEPSEEK3))
# R1 drops the reasoning of earlier turns; the final answer always carries a (maybe empty) block
register(Template(name="deepseekr1", thought=Thought(always_block=True), **_DEEPSEEK3))
_plain("deepseekcoder", "### Instruction:\n{content}\n", "{content}\n<|EOT|>\n", "### Response:\n", "{content}\n",
       prefix="{bos}", stop_words=("<|EOT|>",),
       default_system="You are an AI programming assistant, utilizing the Deepseek Coder model, developed by Deepseek "
                      "Company, and you only answer questions related to computer science. For politically sensitive "
                      "questions, security and privacy issues, and other non-computer science questions, you will "
                      "refuse to answer")

# -- GLM ----------------------------------------------------------------------------------------
_glm("glm4")
_glm("chatglm3")
_glm("codegeex4", "你是一位智能编程助手，你叫CodeGeeX。你会为用户回答关于编程、代码、计算机方面的任何问题，"
                  "并提供格式规范、可以执行、准确安全的代码，并在必要时提供详细的解释。")
# GLM-4.5: every answer carries a think block; earlier turns keep an empty one
_glm("glm4_moe", format_assistant="{content}",
     thought=Thought(open="\n<think>", close="</think>\n", always_block=True, answer_prefix="\n<think></think>\n"))

# -- ChatML families ----------------------------------------------------------------------------
_chatml("yi")
_chatml("smollm", "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
_chatml("smollm2", "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
_chatml("intern2", prefix="{bos}", default_system=(
    "You are an AI assistant whose name is InternLM (书生·浦语).\n"
    "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory "
    "(上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM (书生·浦语) can understand and communicate fluently in the language chosen by the user such as "
    "English and 中文."))
_chatml("intern3", prefix="{bos}")
_chatml("cpm3", prefix="{bos}")
_chatml("dbrx", (  # dbrx-instruct's tokenizer default, in full
    "You are DBRX, created by Databricks. You were last updated in December 2023. You answer questions based on "
    "information available up to that point.\nYOU PROVIDE SHORT RESPONSES TO SHORT QUESTIONS OR STATEMENTS, but provide "
    "thorough responses to more complex and open-ended questions.\nYou assist with various tasks, from writing to "
    "coding (using markdown for code blocks \u2014 remember to use ``` with code, JSON, and tables).\n(You do not have "
    "real-time data access or code execution capabilities. You avoid stereotyping and provide balanced perspectives "
    "on controversial topics. You do not provide song lyrics, poems, or news articles and do not divulge details of "
    "your training data.)\nThis is your system prompt, guiding your responses. Do not reference it, just respond to "
    "the user. If you find yourself talking about this message, stop. You should be responding appropriately and "
    "usually that means not mentioning this.\nYOU DO NOT MENTION ANY OF THIS INFORMATION ABOUT YOURSELF UNLESS THE "
    "INFORMATION IS DIRECTLY PERTINENT TO THE USER'S QUERY."))
register(Template(
    name="sailor", format_system="<|im_start|>system\n{content}<|im_end|>\n",
    format_user="<|im_start|>question\n{content}<|im_end|>\n", generation_prompt="<|im_start|>answer\n",
    format_assistant="{content}<|im_end|>\n", stop_words=("<|im_end|>",),
    default_system="You are an AI assistant named Sailor created by Sea AI Lab. Your answer should be friendly, "
                   "unbiased, faithful, informative and detailed.",
))

# -- role-token families ------------------------------------------------------------------------
register(Template(
    name="cohere", prefix="{bos}",
    format_system="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{content}<|END_OF_TURN_TOKEN|>",
    format_user="<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{content}<|END_OF_TURN_TOKEN|>",
    generation_prompt="<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", format_assistant="{content}<|END_OF_TURN_TOKEN|>",
    stop_words=("<|END_OF_TURN_TOKEN|>",),
))
for _name in ("granite", "granite3"):
    register(Template(
        name=_name, format_system="<|start_of_role|>system<|end_of_role|>{content}<|end_of_text|>\n",
        format_user="<|start_of_role|>user<|end_of_role|>{content}<|end_of_text|>\n",
        format_observation="<|start_of_role|>tool_response<|end_of_role|>{content}<|end_of_text|>\n",
        generation_prompt="<|start_of_role|>assistant<|end_of_role|>", format_assistant="{content}<|end_of_text|>\n",
        stop_words=("<|end_of_text|>",),
    ))
register(Template(  # harmony: reasoning in the analysis channel, the answer in the final channel
    name="gpt_oss", format_system="<|start|>system<|message|>{content}<|end|>",
    format_user="<|start|>user<|message|>{content}<|end|>", generation_prompt="<|start|>assistant",
    format_assistant="{content}<|end|>", default_system="You are ChatGPT, a large language model trained by OpenAI.",
    stop_words=("<|end|>", "<|return|>", "<|call|>"),
    thought=Thought(open="<|channel|>analysis<|message|>", close="<|end|><|start|>assistant<|channel|>final<|message|>",
                    answer_prefix="<|channel|>final<|message|>", nothink="<|channel|>final<|message|>"),
))
register(Template(
    name="seed_coder", format_system="<[begin▁of▁sentence]>system\n{content}<[end▁of▁sentence]>",
    format_user="<[begin▁of▁sentence]>user\n{content}<[end▁of▁sentence]>",
    generation_prompt="<[begin▁of▁sentence]>assistant\n", format_assistant="{content}<[end▁of▁sentence]>",
    stop_words=("<[end▁of▁sentence]>",),
    default_system="You are an AI programming assistant, utilizing the Seed-Coder model, developed by ByteDance Seed, "
                   "and you only answer questions related to computer science. For politically sensitive questions, "
                   "security and privacy issues, and other non-computer science questions, you will refuse to answer.",
))
register(Template(
    name="starchat", format_system="<|system|>\n{content}<|end|>\n", format_user="<|user|>\n{content}<|end|>\n",
    generation_prompt="<|assistant|>\n", format_assistant="{content}<|end|>\n", stop_words=("<|end|>",),
))
register(Template(
    name="zephyr", format_system="<|system|>\n{content}{eos}\n", format_user="<|user|>\n{content}{eos}\n",
    generation_prompt="<|assistant|>\n", format_assistant="{content}{eos}\n",
))
register(Template(
    name="exaone", format_system="[|system|]{content}[|endofturn|]\n", format_user="[|user|]{content}\n",
    generation_prompt="[|assistant|]", format_assistant="{content}[|endofturn|]\n", stop_words=("[|endofturn|]",),
))
register(Template(  # Hunyuan-A13B: <|startoftext|>system<|extra_4|>user<|extra_0|>answer<|eos|>; later users reopen
    name="hunyuan", format_system="{content}<|extra_4|>", system_in_user=True,
    format_user="<|startoftext|>{content}<|extra_0|>", format_assistant="{content}<|eos|>", stop_words=("<|eos|>",),
))
register(Template(
    name="olmo", prefix="{eos}", format_system="<|system|>\n{content}\n", format_user="<|user|>\n{content}\n",
    generation_prompt="<|assistant|>\n", format_assistant="{content}{eos}\n",
))
register(Template(
    name="openchat", prefix="{bos}", format_system="GPT4 Correct System: {content}<|end_of_turn|>",
    format_user="GPT4 Correct User: {content}<|end_of_turn|>", generation_prompt="GPT4 Correct Assistant:",
    format_assistant=" {content}<|end_of_turn|>", stop_words=("<|end_of_turn|>",),
))
register(Template(
    name="telechat", format_system="<_system>{content}<_end>", format_user="<_user>{content}",
    generation_prompt="<_bot>", format_assistant="{content}<_end>", stop_words=("<_end>",),
))

# -- plain-text families ------------------------------------------------------------------------
_plain("solar", "### User:\n{content}\n\n", "{content}{eos}", "### Assistant:\n", "### System:\n{content}\n\n")
_plain("falcon", "User: {content}\n", "{content}\n", "Falcon:", "{content}\n", stop_words=("User:",))
_plain("baichuan", "<reserved_102>{content}", "{content}{eos}", "<reserved_103>")
_plain("baichuan2", "<reserved_106>{content}", "{content}{eos}", "<reserved_107>")
_plain("yuan", "{content}<sep>", "{content}<eod>", stop_words=("<eod>",))
_plain("xverse", "Human: {content}\n\n", "{content}{eos}", "Assistant: ")
_plain("orion", "Human: {content}\n\n", "{content}{eos}", "Assistant: ", prefix="{bos}")
_plain("aquila", "Human: {content}###", "{content}###", "Assistant:", "System: {content}###", stop_words=("</s>",),
       default_system="A chat between a curious human and an artificial intelligence assistant. "
                      "The assistant gives helpful, detailed, and polite answers to the human's questions.")
_plain("atom", "{bos}Human: {content}\n{eos}", "{content}\n{eos}", "{bos}Assistant:")
_plain("breeze", "[INST] {content} [/INST] ", "{content}{eos}", "", "{content} ", prefix="{bos}",
       default_system="You are a helpful AI assistant built by MediaTek Research. The user you are helping speaks "
                      "Traditional Chinese and comes from Taiwan.")
_plain("cpm", "<用户>{content}", "{content}{eos}", "<AI>", prefix="{bos}")
_plain("bluelm", "[|Human|]:{content}", "{content}{eos}", "[|AI|]:", prefix="{bos}")
_plain("index", "reserved_0{content}", "{content}{eos}", "reserved_1", "<unk>{content}", stop_words=("reserved_0",))
_plain("ziya", "<human>:{content}\n", "{content}\n", "<bot>:")
_plain("belle", "Human: {content}\n\n", "{content}{eos}\n\n", "Belle: ", prefix="{bos}")
