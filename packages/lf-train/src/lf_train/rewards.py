"""Verifiable rewards for the grpo stage: scores computed from the text alone, offline.

Each reward takes TRL's reward-function arguments (`completions`, plus every dataset column as a
keyword, e.g. `solution`: the reference answer) and returns one float per completion, or None
where it does not apply (TRL averages those out). `reward_funcs: [accuracy, format]` picks them by
name; `module:function` loads a user's own, only with `trust_remote_code: true` (it runs their code).
This module imports no torch, so names are checked with the config, before weights load.
"""

from __future__ import annotations

import difflib
import importlib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from lf_data.errors import ConfigError, DataError

RewardFunc = Callable[..., list[float | None]]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_THINK = re.compile(r"^\s*<think>.*?</think>\s*\S", re.DOTALL)


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings for text prompts, `[{"role", "content"}]` for chats."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return str(completion)


def _boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def extract_answer(text: str) -> str:
    """The final answer a text gives: `\\boxed{x}`, else what follows `####`, else what follows a
    `</think>`, else the whole text."""
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1].strip()
    return text.strip()


def _as_number(text: str) -> float | None:
    """The number a short answer states ("1,234", "$12.50", "3/4", "50%"), or None."""
    cleaned = text.strip().strip(".").replace("$", "").replace("\\%", "%").replace("\\!", "").strip()
    fraction = re.fullmatch(r"(-?\d+)\s*/\s*(\d+)", cleaned) or re.fullmatch(
        r"\\d?frac\{(-?\d+)\}\{(\d+)\}", cleaned)
    if fraction:
        return int(fraction.group(1)) / int(fraction.group(2)) if int(fraction.group(2)) else None
    cleaned = cleaned.rstrip("%").strip()
    if _NUMBER.fullmatch(cleaned):
        return float(cleaned.replace(",", ""))
    return None


def _last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def _normalise(text: str) -> str:
    return " ".join(text.lower().strip().strip(".").split())


def answers_match(completion: str, solution: str) -> bool:
    """Whether a completion's final answer equals the reference: numerically when the reference is a
    number (the completion's boxed/#### answer, else its last number), else as normalised text."""
    reference = extract_answer(solution)
    given = extract_answer(completion)
    expected = _as_number(reference)
    if expected is not None:
        value = _as_number(given)
        if value is None:
            value = _last_number(given)
        return value is not None and math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9)
    return _normalise(given) == _normalise(reference)


def accuracy(completions: Sequence[Any], solution: Sequence[str | None] | None = None,
             **kwargs: Any) -> list[float | None]:
    """1.0 when the final answer matches the reference answer (`solution`, the dataset's answer), else
    0.0; None for rows without a reference answer."""
    if solution is None:
        solution = [None] * len(completions)
    return [None if not reference else float(answers_match(completion_text(c), reference))
            for c, reference in zip(completions, solution, strict=True)]


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion reasons in `<think>...</think>` and then gives an answer, else 0.0."""
    return [float(bool(_THINK.match(completion_text(c)))) for c in completions]


def json_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion (or its ```json fenced block) parses as JSON, else 0.0."""
    scores: list[float | None] = []
    for c in completions:
        text = completion_text(c).strip()
        fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
        try:
            json.loads(fenced.group(1) if fenced else text)
            scores.append(1.0)
        except ValueError:
            scores.append(0.0)
    return scores


def length_penalty(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                   **kwargs: Any) -> list[float | None]:
    """Minus the completion's share of the longest completion in the batch (tokens when given, else
    characters): 0 for the shortest possible, -1 for the longest, so shorter answers win ties."""
    lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else \
        [len(completion_text(c)) for c in completions]
    longest = max(lengths, default=0)
    return [-(n / longest) if longest else 0.0 for n in lengths]


REWARDS: dict[str, RewardFunc] = {
    "accuracy": accuracy,
    "format": format_reward,
    "json": json_reward,
    "length": length_penalty,
}
"""The built-in rewards by the name `reward_funcs` uses."""
MODEL_REWARD = "reward_model"
"""The reward_funcs name of the run's reward model (`reward_model`, `reward_model_type`), built by the grpo
stage around `lf_train.reward_models` because it needs the loaded policy."""


def check_reward_names(names: Sequence[str], weights: Sequence[float] | None, trust_remote_code: bool) -> None:
    """Refuse unknown names, user functions without opt-in and mismatched weights (no import here)."""
    if not names:
        raise ConfigError(f"stage grpo needs reward_funcs: one or more of {', '.join(REWARDS)} "
                          "(or module:function with trust_remote_code: true).")
    for name in names:
        if ":" in name:
            if not trust_remote_code:
                raise ConfigError(f"reward_funcs: {name!r} runs your own Python code; set trust_remote_code: true "
                                  "to allow it.")
        elif name not in REWARDS and name != MODEL_REWARD:
            known = [*REWARDS, MODEL_REWARD]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"reward_funcs: unknown reward {name!r}{hint}; known: {', '.join(known)}, "
                              "or module:function with trust_remote_code: true.")
    if weights is not None and len(weights) != len(names):
        raise ConfigError(f"reward_weights has {len(weights)} value(s) for {len(names)} reward_funcs; give one "
                          "weight per reward.")


def load_rewards(names: Sequence[str], trust_remote_code: bool = False,
                 model_reward: RewardFunc | None = None) -> list[RewardFunc]:
    """The reward functions `reward_funcs` names, each carrying its name (TRL logs `rewards/<name>/mean`);
    `model_reward`: the scorer of the run's reward model, for the name `reward_model`."""
    check_reward_names(names, None, trust_remote_code)
    loaded: list[RewardFunc] = []
    for name in names:
        if name == MODEL_REWARD:
            if model_reward is None:
                raise ConfigError("reward_funcs: reward_model needs reward_model: the output_dir of an rm run or "
                                  "the URL of an `lf api` reward server.")
            func = model_reward
        elif ":" not in name:
            func = REWARDS[name]
        else:
            module, attribute = name.split(":", 1)
            try:
                func = getattr(importlib.import_module(module), attribute)
            except (ImportError, AttributeError) as err:
                raise ConfigError(f"reward_funcs: cannot load {name!r}: {err}.") from None
            if not callable(func):
                raise ConfigError(f"reward_funcs: {name!r} is not a function.")
        loaded.append(_named(func, name))
    return loaded


def _named(func: RewardFunc, name: str) -> RewardFunc:
    """`func` under its reward_funcs name, stopping the run with that name and the prompt when it raises
    or does not return one score per completion (TRL would fail later with an unrelated shape error)."""
    def reward(*args: Any, **kwargs: Any) -> list[float | None]:
        completions = kwargs["completions"] if "completions" in kwargs else (args[0] if args else [])
        prompt = str((kwargs.get("prompts") or [""])[0])
        where = f"on the completions of prompt {prompt[:80]!r}"
        try:
            scores = func(*args, **kwargs)
        except Exception as err:
            raise DataError(f"reward {name!r} raised {type(err).__name__}: {err} ({where}); fix the function or "
                            "remove it from reward_funcs.") from err
        if (not isinstance(scores, list | tuple) or len(scores) != len(completions)
                or not all(s is None or (isinstance(s, int | float) and not isinstance(s, bool)) for s in scores)):
            got = f"{len(scores)} value(s)" if isinstance(scores, list | tuple) else type(scores).__name__
            raise DataError(f"reward {name!r} returned {got} for {len(completions)} completions ({where}); it must "
                            "return a list with one float (or None) per completion.")
        return list(scores)

    reward.__name__ = name.replace(":", ".")
    reward.__doc__ = func.__doc__
    return reward


def group_advantages(rewards: Sequence[float], num_generations: int, scale_rewards: str = "group") -> list[float]:
    """GRPO's advantages as TRL computes them: each reward minus its group's mean, divided by the
    group's (unbiased) standard deviation + 1e-4 (`group`), the batch's (`batch`), or not (`none`)."""
    if len(rewards) % num_generations:
        raise ValueError(f"{len(rewards)} rewards do not form groups of {num_generations}.")

    def std(values: Sequence[float]) -> float:
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0

    advantages: list[float] = []
    for start in range(0, len(rewards), num_generations):
        group = rewards[start:start + num_generations]
        mean = sum(group) / len(group)
        scale = {"group": std(group), "batch": std(rewards)}.get(scale_rewards)
        advantages += [(r - mean) / (scale + 1e-4) if scale is not None else r - mean for r in group]
    return advantages
