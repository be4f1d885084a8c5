"""The fast tokenizer's own threads: on while a dataset is tokenised, off where a fork may follow.

The Rust tokenizer encodes a batch of texts on all cores when `TOKENIZERS_PARALLELISM` allows it
(10,000 alpaca rows on 2 cores: 3.9 -> 2.6 s; bench/vs_llamafactory.py --work preprocess). A process
that forks after those threads ran must not use them again (the child has none; the library turns
them off there and warns unless the variable is set), so the variable is set to off around them:
the CLI sets it at start-up unless the user did, and a build turns it on only for itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

VARIABLE = "TOKENIZERS_PARALLELISM"
_set_by_lf = False  # the CLI's quiet default, not the user's choice


def quiet_default() -> None:
    """Threads off unless the user chose: DataLoader workers and `num_proc` maps fork after tokenising."""
    global _set_by_lf
    if VARIABLE not in os.environ:
        os.environ[VARIABLE] = "false"
        _set_by_lf = True


def user_choice() -> str | None:
    """The value the user gave, if any (the CLI's own default is not one)."""
    return None if _set_by_lf else os.environ.get(VARIABLE)


def for_child(env: dict[str, str]) -> dict[str, str]:
    """The environment for a child `lf` process (a board job, a torchrun worker): the user's value passed
    on, LF's own default left out, so that the child decides for itself where it tokenises."""
    if user_choice() is None:
        env = {key: value for key, value in env.items() if key != VARIABLE}
    return env


@contextmanager
def batch_threads(num_proc: int | None = None, streaming: bool = False) -> Iterator[bool]:
    """Threads on for the body when tokenising happens here, in this process: not when the user set
    the variable, not with `num_proc` worker processes (forked children must not start them), not for
    a streaming dataset (it tokenises later, in the training loop) and not on one core. Yields whether
    it turned them on; afterwards the variable is what it was before."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if user_choice() is not None or (num_proc or 1) > 1 or streaming or usable < 2:
        yield False
        return
    before = os.environ.get(VARIABLE)
    os.environ[VARIABLE] = "true"  # read by the Rust library at each batch call
    try:
        yield True
    finally:
        if before is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = before
