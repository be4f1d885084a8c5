"""Label masking constant and the rule for sharing a token budget between prompt and response."""

from __future__ import annotations

IGNORE_INDEX = -100


def truncate_pair(source_len: int, target_len: int, budget: int) -> tuple[int, int]:
    """Share a token budget between a prompt and its response, keeping some of each.

    A short response keeps all of its tokens; otherwise both are cut in proportion, the response
    never below half of the budget, since it is what the turn teaches.
    """
    if source_len + target_len <= budget:
        return source_len, target_len
    if target_len * 2 < budget:
        return budget - target_len, target_len
    if source_len * 2 < budget:
        return source_len, budget - source_len
    target = max(budget // 2, budget * target_len // (source_len + target_len))
    return budget - target, target
