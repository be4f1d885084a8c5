"""Every named chat template, in one place. Names follow LlamaFactory's where one exists, so
existing recipes keep working; formats follow each family's own chat template (special tokens,
newlines, default system prompt, bos, stop words)."""

from __future__ import annotations

import difflib
from dataclasses import replace

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
                          f"or one of: {', '.join(template_names())}.")
    return TEMPLATES[name]


def template_names() -> list[str]:
    """Every template name, sorted; an alias shows what it stands for, a vision/audio model's template
    says so (`qwen3_vl (multimodal)`). Whether rows with media train is the model family's answer
    (`lf_models.families`), not the template's: a template is the text format alone."""
    def label(name: str) -> str:
        if name in ALIASES:
            return f"{name} (= {ALIASES[name]})"
        return f"{name} (multimodal)" if name in MULTIMODAL else name

    return [label(n) for n in sorted(TEMPLATES)]


# -- families built on a shared shape ------------------------------------------------------------
def _chatml(name: str, default_system: str = "", prefix: str = "", **extra) -> Template:
    """`<|im_start|>role\\n...<|im_end|>\\n` (OpenAI ChatML), used by many families."""
    fields = {"format_observation": "<|im_start|>tool\n{content}<|im_end|>\n", "stop_words": ("<|im_end|>",), **extra}
    return register(Template(
        name=name, prefix=prefix,
        format_system="<|im_start|>system\n{content}<|im_end|>\n",
        format_user="<|im_start|>user\n{content}<|im_end|>\n",
        generation_prompt="<|im_start|>assistant\n",
        format_assistant="{content}<|im_end|>\n",
        default_system=default_system, **fields,
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
        name=name, prefix=extra.pop("prefix", "[gMASK]<sop>"),
        generation_prompt="<|assistant|>", default_system=default_system, tool_format="glm4",
        **{"format_system": "<|system|>\n{content}", "format_user": "<|user|>\n{content}",
           "format_observation": "<|observation|>\n{content}", "format_assistant": "\n{content}",
           "format_function": "{content}", "stop_words": ("<|user|>", "<|observation|>"), **extra},
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
# Qwen3-Instruct-2507 (and Qwen3-VL / Omni Instruct): no reasoning at all, so no <think> block anywhere;
# their tokenizers' chat templates render plain ChatML answers (as does LlamaFactory's qwen3_nothink)
_qwen("qwen3_nothink")

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
# ChatGLM3's tokenizer writes its prefix as the special tokens [gMASK] and "sop" (no angle brackets;
# GLM-4 renamed it <sop>): THUDM/chatglm3-6b tokenization_chatglm.py, get_prefix_tokens
_glm("chatglm3", prefix="[gMASK]sop")
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

# -- names LlamaFactory 0.9.5 adds ---------------------------------------------------------------
# Formats from LlamaFactory 0.9.5's registry and the models' own chat templates; where the two
# disagree, tests/lf_data/test_template_parity.py (KNOWN_DIFFERENCES) says how and why.
ALIASES: dict[str, str] = {}
"""Names that are another name for a template (LlamaFactory's per-model names for the same format)."""
MULTIMODAL: set[str] = set()
"""Names of vision/audio models' templates. A template is the text format only: rows with media train
when the model's family (`lf_models.families`) takes that media -- the `<image>`/`<video>`/`<audio>`
placeholders become the model's own tokens and the media reaches its encoder -- and are refused before
training otherwise; text rows render and train with any of them."""


def alias(name: str, of: str, *, multimodal: bool = False) -> Template:
    """Register `name` as another name for the template `of` (same format, same stop words)."""
    ALIASES[name] = of
    if multimodal:
        MULTIMODAL.add(name)
    return register(replace(TEMPLATES[of], name=name))


def _vl(template: Template) -> Template:
    MULTIMODAL.add(template.name)
    return template


_QWEN_SYSTEM = "You are a helpful assistant."
# Qwen3 hybrid-thinking shapes: the thinking variants keep Qwen3's reasoning rules; *_nothink have no
# block (Qwen3-VL-Instruct's and Qwen3-Omni-Instruct's templates render none).
_vl(_qwen("qwen3_vl", thought=Thought(always_block=True)))
alias("qwen3_vl_nothink", "qwen3_nothink", multimodal=True)
_vl(_qwen("qwen3_omni", thought=Thought(always_block=True)))
alias("qwen3_omni_nothink", "qwen3_nothink", multimodal=True)
# Qwen3.5 / 3.6: Qwen3's text format; their XML tool-call format is not written yet (Hermes JSON calls here)
_vl(_qwen("qwen3_5", thought=Thought(always_block=True)))
_vl(_qwen("qwen3_6", thought=Thought(always_block=True)))
alias("qwen3_5_nothink", "qwen3_nothink", multimodal=True)
alias("qwen2_omni", "qwen2_vl", multimodal=True)
alias("llava_next_qwen", "qwen2_vl", multimodal=True)
_vl(_qwen("keye_vl", thought=Thought(always_block=True)))
_qwen("mimo", _QWEN_SYSTEM, thought=Thought(always_block=True))
_qwen("mimo_v2", "You are MiMo, a helpful AI assistant engineered by Xiaomi.",
      thought=Thought(open="<think>", close="</think>", always_block=True))
_vl(_qwen("mimo_vl", "You are MiMo, an AI assistant developed by Xiaomi.", thought=Thought(always_block=True)))

# ChatML relatives
_USER_OBSERVATION = {"format_observation": "<|im_start|>user\n{content}<|im_end|>\n"}
_chatml("cpm4", prefix="{bos}")
_chatml("falcon_h1", prefix="{bos}", stop_words=("<|im_end|>", "<|end_of_text|>"))
_chatml("opencoder", "You are OpenCoder, created by OpenCoder Team.")
_vl(_chatml("intern_s1", prefix="{bos}", **_USER_OBSERVATION))
_vl(_chatml("intern_vl", prefix="{bos}", default_system="你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位"
            "联合开发的多模态大语言模型。", **_USER_OBSERVATION))
_vl(_chatml("llava_next_yi", **_USER_OBSERVATION))
_vl(_chatml("llava_next_video_yi", **_USER_OBSERVATION))
_vl(_chatml("minicpm_v", _QWEN_SYSTEM, **_USER_OBSERVATION))
_vl(_chatml("minicpm_v_4_6", _QWEN_SYSTEM, **_USER_OBSERVATION))
_vl(_chatml("minicpm_o", "You are a helpful assistant. You can accept audio and text input and output voice and text.",
            **_USER_OBSERVATION))
_LFM2_TOOL = {"format_observation": "<|im_start|>tool\n<|tool_response_start|>{content}<|tool_response_end|><|im_end|>\n"}
_chatml("lfm2", "You are a helpful AI assistant.", **_LFM2_TOOL)
_vl(_chatml("lfm2_vl", "You are a helpful multimodal assistant by Liquid AI.", **_LFM2_TOOL))
register(Template(  # ERNIE 4.5: ChatML with a blank line after each turn
    name="ernie", format_system="<|im_start|>system\n{content}<|im_end|>\n\n",
    format_user="<|im_start|>user\n{content}<|im_end|>\n\n", generation_prompt="<|im_start|>assistant\n",
    format_assistant="{content}<|im_end|>\n\n", format_observation="<|im_start|>tool\n{content}<|im_end|>\n\n",
    default_system="<global_setting>\nthink_mode=True\n</global_setting>", stop_words=("<|im_end|>",),
))
register(Template(  # ERNIE 4.5 (non-thinking): plain User:/Assistant: turns
    name="ernie_nothink", prefix="<|begin_of_sentence|>", format_system="{content}\n",
    format_user="User: {content}\n", generation_prompt="Assistant: ", format_assistant="{content}<|end_of_sentence|>",
    stop_words=("<|end_of_sentence|>",),
))
_vl(register(Template(
    name="ernie_vl", format_system="{content}\n", format_user="User: {content}", generation_prompt="\nAssistant: ",
    format_assistant="{content}<|end_of_sentence|>", stop_words=("<|end_of_sentence|>",),
    thought=Thought(always_block=True),
)))
_vl(register(Template(
    name="dots_ocr", format_system="<|system|>{content}<|endofsystem|>\n", format_user="<|user|>{content}<|endofuser|>",
    generation_prompt="<|assistant|>", format_assistant="{content}<|endofassistant|>",
    stop_words=("<|endofassistant|>",),
)))
_KIMI = {"format_system": "<|im_system|>system<|im_middle|>{content}<|im_end|>",
         "format_user": "<|im_user|>user<|im_middle|>{content}<|im_end|>",
         "generation_prompt": "<|im_assistant|>assistant<|im_middle|>", "format_assistant": "{content}<|im_end|>",
         "stop_words": ("<|im_end|>",)}
register(Template(name="moonlight", default_system="You are a helpful assistant provided by Moonshot-AI.", **_KIMI))
_vl(register(Template(name="kimi_vl", default_system="You are a helpful assistant",
                      thought=Thought(open="◁think▷", close="◁/think▷", always_block=True), **_KIMI)))

# Llama / Mistral / Gemma relatives
_vl(_llama3("llava_next_llama3"))
alias("llava_next_mistral", "mistral", multimodal=True)
alias("llava_next_video_mistral", "mistral", multimodal=True)
alias("ministral3", "ministral", multimodal=True)
alias("pixtral", "ministral", multimodal=True)
_VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                  "The assistant gives helpful, detailed, and polite answers to the user's questions.")
for _name in ("llava", "llava_next", "llava_next_video", "video_llava"):  # LLaVA-1.5 / NeXT (Vicuna) prompts
    _vl(_plain(_name, "USER: {content} ", "{content}{eos}", "ASSISTANT:", "{content} ", default_system=_VICUNA_SYSTEM))
# Idefics3 / SmolVLM (no LlamaFactory template): "User: ...<end_of_utterance>\nAssistant: ...", as their
# own chat templates write string turns; SmolVLM's tokenizer has no bos, its turns start with <|im_start|>
for _name, _prefix in (("idefics3", "{bos}"), ("smolvlm", "<|im_start|>")):
    _vl(_plain(_name, "User: {content}<end_of_utterance>\n", " {content}<end_of_utterance>\n", "Assistant:",
               "System: {content}<end_of_utterance>\n", prefix=_prefix, stop_words=("<end_of_utterance>",)))
_vl(_plain("granite3_vision", "<|user|>\n{content}\n", "{content}{eos}", "<|assistant|>\n", "<|system|>\n{content}\n",
           default_system=_VICUNA_SYSTEM))
_vl(_plain("yi_vl", "### Human: {content}\n", "{content}\n", "### Assistant:", stop_words=("###",),
           default_system="This is a chat between an inquisitive human and an AI assistant. Assume the role of the AI "
           "assistant. Read all the images carefully, and respond to the human's questions with informative, helpful, "
           "detailed and polite answers. 这是一个好奇的人类和一个人工智能助手之间的对话。假设你扮演这个AI助手的角色。"
           "仔细阅读所有的图像，并对人类的问题做出信息丰富、有帮助、详细的和礼貌的回答。\n\n"))
_vl(register(Template(  # PaliGemma (pt): prompt, newline, answer; no system role
    name="paligemma", prefix="{bos}", format_user="{content}\n", format_assistant="{content}{eos}", system_in_user=True,
)))
_vl(register(replace(TEMPLATES["gemma"], name="paligemma_chat", prefix="{bos}", format_system="{content}")))
for _name in ("gemma4", "gemma4n"):  # Gemma 4: <|turn> roles, thinking in the thought channel
    _vl(register(Template(
        name=_name, prefix="{bos}", format_system="<|turn>system\n<|think|>{content}<turn|>\n",
        format_user="<|turn>user\n{content}<turn|>\n", generation_prompt="<|turn>model\n",
        format_assistant="{content}<turn|>\n", format_observation="<|turn>tool\n{content}<turn|>\n",
        default_system=_QWEN_SYSTEM, stop_words=("<turn|>",),
        thought=Thought(open="<|channel>thought\n", close="<channel|>", always_block=True),
    )))

# GLM relatives: GLM-4.1V / Z1 reason in <think>; GLM-4.5V / 4.7 as GLM-4.5
_vl(_glm("glm4v", thought=Thought(always_block=True)))
_glm("glmz1", thought=Thought(always_block=True))
_vl(_glm("glm_ocr"))
# GLM-4.7's chat template (quoted in full in github.com/…/llm_model_templates, glm prompt formatter): no newline
# after a role token; an answer without reasoning opens with a bare </think>, the current turn's reasoning is
# <think>...</think>; with thinking off the generation prompt ends in </think>
_GLM47 = {"format_user": "<|user|>{content}", "format_system": "<|system|>{content}", "format_assistant": "{content}",
          "format_observation": "<|observation|>{content}",
          "thought": Thought(open="<think>", close="</think>", answer_prefix="</think>", nothink="</think>")}
_glm("glm4_7", **_GLM47)
_glm("aeva", "You are an AI assistant named Aeva created by Zongzhi Lou. Your answer should be friendly, unbiased, "
     "faithful, informative and detailed.", **_GLM47)
_vl(register(replace(TEMPLATES["glm4_moe"], name="glm4_5v", stop_words=("<|user|>", "<|observation|>", "</answer>"))))

# other families
register(Template(
    name="granite4", format_system="<|start_of_role|>system<|end_of_role|>{content}<|end_of_text|>\n",
    format_user="<|start_of_role|>user<|end_of_role|>{content}<|end_of_text|>\n",
    format_observation="<|start_of_role|>tool<|end_of_role|>{content}<|end_of_text|>\n",
    generation_prompt="<|start_of_role|>assistant<|end_of_role|>", format_assistant="{content}<|end_of_text|>\n",
    default_system="You are Granite, developed by IBM. You are a helpful AI assistant.", stop_words=("<|end_of_text|>",),
))
register(Template(
    name="hunyuan_small", prefix="<｜hy_begin▁of▁sentence｜>", format_system="{content}<｜hy_place▁holder▁no▁3｜>",
    format_user="<｜hy_User｜>{content}", generation_prompt="<｜hy_place▁holder▁no▁8｜>",
    format_assistant="{content}<｜hy_place▁holder▁no▁2｜>", stop_words=("<｜hy_place▁holder▁no▁2｜>",),
))
register(Template(
    name="hy3", prefix="{bos}", format_user="<｜hy_User｜>{content}", generation_prompt="<｜hy_Assistant｜>",
    format_assistant="{content}<｜hy_eos｜>", stop_words=("<｜hy_eos｜>",),
    thought=Thought(open="<think>", close="</think>", always_block=True),
))
register(Template(
    name="youtu", prefix="{bos}", format_user="<|User|>{content}", generation_prompt="<|Assistant|>",
    format_assistant="{content}<|end_of_text|>", format_observation="<tool_response>\n{content}\n</tool_response>",
    stop_words=("<|end_of_text|>",), thought=Thought(always_block=True),
))
_vl(register(Template(
    name="youtu_vl", format_system="<|begin_of_text|>system\n{content}<|end_of_text|>\n",
    format_user="<|begin_of_text|>user\n{content}<|end_of_text|>\n", generation_prompt="<|begin_of_text|>assistant\n",
    format_assistant="{content}<|end_of_text|>\n", default_system=_QWEN_SYSTEM, stop_words=("<|end_of_text|>",),
)))
register(Template(
    name="bailing", format_system="<role>SYSTEM</role>{content}", format_user="<role>HUMAN</role>{content}",
    generation_prompt="<role>ASSISTANT</role>", format_assistant="{content}",
    format_observation="<role>OBSERVATION</role>{content}", stop_words=("<|endoftext|>",),
))
register(Template(
    name="bailing_v2", format_system="<role>SYSTEM</role>{content}<|role_end|>",
    format_user="<role>HUMAN</role>{content}<|role_end|>", generation_prompt="<role>ASSISTANT</role>",
    format_assistant="{content}<|role_end|>",
    format_observation="<role>OBSERVATION</role>\n<tool_response>\n{content}\n</tool_response><|role_end|>",
    stop_words=("<|endoftext|>",),
))
register(Template(
    name="minimax1", format_system="<beginning_of_sentence>system ai_setting=assistant\n{content}<end_of_sentence>\n",
    format_user="<beginning_of_sentence>user name=user\n{content}<end_of_sentence>\n",
    generation_prompt="<beginning_of_sentence>ai name=assistant\n", format_assistant="{content}<end_of_sentence>\n",
    format_observation="<beginning_of_sentence>tool name=tools\n{content}<end_of_sentence>\n",
    default_system=_QWEN_SYSTEM, stop_words=("<end_of_sentence>",),
))
register(Template(
    name="minimax2", format_system="]~!b[]~b]system\n{content}[e~[\n", format_user="]~b]user\n{content}[e~[\n",
    generation_prompt="]~b]ai\n", format_assistant="{content}[e~[\n",
    format_observation="]~b]tool\n<response>{content}</response>[e~[\n",
    default_system="You are a helpful assistant. Your name is MiniMax-M2.1 and is built by MiniMax.",
    stop_words=("[e~[",), thought=Thought(always_block=True),
))
register(Template(  # Seed-OSS: bos / eos delimit every turn
    name="seed_oss", format_system="{bos}system\n{content}{eos}", format_user="{bos}user\n{content}{eos}",
    generation_prompt="{bos}assistant\n", format_assistant="{content}{eos}",
    thought=Thought(open="<seed:think>", close="</seed:think>", always_block=True),
))
register(Template(
    name="telechat2", format_system="<_system>{content}", format_user="<_user>{content}", generation_prompt="<_bot>",
    format_assistant="{content}{eos}",
    default_system="你是中国电信星辰语义大模型，英文名是TeleChat，你是由中电信人工智能科技有限公司和中国电信人工智能研究院"
                   "（TeleAI）研发的人工智能助手。",
))
_plain("xuanyuan", "Human: {content} ", "{content}{eos}", "Assistant:",
       default_system="以下是用户和人工智能助手之间的对话。用户以Human开头，人工智能助手以Assistant开头，会对人类提出的问题给出"
                      "有帮助、高质量、详细和礼貌的回答，并且总是拒绝参与与不道德、不安全、有争议、政治敏感等相关的话题、问题和指示。\n")
_plain("fewshot", "{content}", "{content}\n\n")
