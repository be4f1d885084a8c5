"""Does a named template render what the model's own chat template renders?

`lf data check` calls `check_against_tokenizer` to warn users whose `template:` disagrees with the
chat template their tokenizer ships, which would train the model on a format it never saw.
"""

from __future__ import annotations

from typing import Any

from lf_data.templates.template import Template, to_openai

STANDARD_CONVERSATIONS: list[tuple[str, list[dict[str, str]], str | None]] = [
    ("one turn", [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there."}], None),
    ("one turn with a system prompt",
     [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there."}], "Be brief."),
    ("two turns", [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there."},
                   {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}], None),
    ("a generation prompt", [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there."},
                             {"role": "user", "content": "What is 2+2?"}], "Be brief."),
]


def first_difference(ours: str, theirs: str) -> str | None:
    """'at character N: ours ... , theirs ...' with a little context, or None when equal."""
    if ours == theirs:
        return None
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    start = max(0, at - 20)
    return f"at character {at}: ours {ours[start:at + 30]!r}, theirs {theirs[start:at + 30]!r}"


def check_against_tokenizer(template: Template, tokenizer: Any) -> str | None:
    """The first difference between `template` and the tokenizer's own chat template over a few
    standard conversations; None when they agree or the tokenizer has no chat template.
    Conversations the tokenizer's template refuses (e.g. no system role) are skipped."""
    if not getattr(tokenizer, "chat_template", None) or not isinstance(template, Template):
        return None
    for label, messages, system in STANDARD_CONVERSATIONS:
        prompt = len(messages) % 2 == 1
        try:
            theirs = tokenizer.apply_chat_template(to_openai(messages, system), tokenize=False,
                                                   add_generation_prompt=prompt)
        except Exception:  # noqa: BLE001 - their template may raise on purpose (e.g. no system role)
            continue
        ours = "".join(p + r for p, r in template.render_pairs(messages, system, tokenizer))
        difference = first_difference(ours, theirs)
        if difference:
            return f"{label}, {difference}"
    return None
