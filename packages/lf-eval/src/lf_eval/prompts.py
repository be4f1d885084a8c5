"""Multiple-choice prompts as chat conversations: few-shot examples are prior user/assistant turns.

The conversation is rendered with the model's chat template (the same lf_data template objects
used in training), so a chat model is asked in the format it was tuned on; the answer it should
give is one letter, the first token of its reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lf_eval.questions import CHOICES, Question


@dataclass(frozen=True)
class PromptStyle:
    instruction: str
    """Opens the first user turn; `{subject}` is the subject's display name."""
    answer_cue: str
    """Ends every question, right before the answer."""


PROMPT_STYLES = {
    "en": PromptStyle("The following are multiple choice questions (with answers) about {subject}.\n\n", "\nAnswer:"),
    "zh": PromptStyle("以下是关于{subject}的单项选择题，请选出正确答案的选项。\n\n", "\n答案："),
}


def format_question(question: Question, style: PromptStyle) -> str:
    options = "".join(f"\n{letter}. {text}" for letter, text in zip(CHOICES, question.options, strict=True))
    return question.question + options + style.answer_cue


def build_messages(question: Question, shots: list[Question], subject_name: str, lang: str) -> list[dict[str, str]]:
    """[user, assistant] per example, then the question as the last user turn."""
    style = PROMPT_STYLES[lang]
    messages = []
    for shot in shots:
        messages.append({"role": "user", "content": format_question(shot, style)})
        messages.append({"role": "assistant", "content": shot.answer or ""})
    messages.append({"role": "user", "content": format_question(question, style)})
    messages[0] = {"role": "user", "content": style.instruction.format(subject=subject_name) + messages[0]["content"]}
    return messages


def encode_question(template: Any, tokenizer: Any, question: Question, shots: list[Question], subject_name: str,
                    lang: str, cutoff_len: int) -> tuple[list[int], int]:
    """(prompt token ids, examples kept): examples are dropped from the end until the prompt fits."""
    for kept in range(len(shots), -1, -1):
        ids = template.encode_prompt(tokenizer, build_messages(question, shots[:kept], subject_name, lang))
        if len(ids) <= cutoff_len:
            return ids, kept
    return ids[-cutoff_len:], 0  # the question alone is too long: keep its end, where the choices are
