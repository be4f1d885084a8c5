"""The fast tokenizer's own threads: on while a dataset is tokenised, off where a fork may follow.

The Rust tokenizer encodes a batch of texts on all cores when `TOKENIZERS_PARALLELISM` allows it
(10,000 alpaca rows on 2 cores: 3.9 -> 2.6 s; bench/vs_llamafactory.py --work preprocess). It reads
the variable at every batch call. At a fork after its threads ran, the variable must say "false": a
child told "true" uses a thread pool it does not have (a deadlock), and a child with the variable
unset turns them off itself but warns. So `lf` sets it to "false" at start-up unless the user set it,
and a dataset build turns it on only for itself, only where nothing forks meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

VARIABLE = "TOKENIZERS_PARALLELISM"
_set_by_lf = False  # the value in the environment is LF's start-up default, not the user's choice
_lock = threading.Lock()
_builds = 0  # builds running with the threads on (the value in the environment is then theirs)
_before: str | None = None  # the value they found


def quiet_default() -> None:
    """Threads off unless the user chose: DataLoader workers and other processes fork after tokenising."""
    global _set_by_lf
    if VARIABLE not in os.environ:
        os.environ[VARIABLE] = "false"
        _set_by_lf = True


def user_choice() -> str | None:
    """The value the user gave, if any: neither LF's start-up default nor a running build's "true" is one."""
    with _lock:
        return None if _set_by_lf or _builds else os.environ.get(VARIABLE)


def for_child(env: dict[str, str]) -> dict[str, str]:
    """The environment for a child `lf` process (a board job, a torchrun worker): the user's value passed
    on, LF's own left out, so that the child decides for itself where it tokenises."""
    if user_choice() is None:
        env = {key: value for key, value in env.items() if key != VARIABLE}
    return env


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextmanager
def batch_threads(num_proc: int | None = None, streaming: bool = False) -> Iterator[bool]:
    """Threads on for the body when this process tokenises alone. Not when the user set the variable;
    not with `num_proc` (datasets then tokenises in a pool of its own); not for a streaming dataset (it
    is tokenised later, in the training loop, maybe in DataLoader workers); not in a torchrun worker other
    than a node's first (the others tokenise at the same time only with `overwrite_cache`, and would then
    share the cores); not on one core. Builds may overlap (board threads) or nest: the first turns the
    threads on, the last one out puts the variable back as it was. Yields whether they are on."""
    global _builds, _before
    with _lock:
        ours = _builds > 0 or _set_by_lf or VARIABLE not in os.environ  # not the user's value
        wanted = (ours and num_proc is None and not streaming and os.environ.get("LOCAL_RANK", "0") == "0"
                  and _usable_cores() > 1)
        if wanted:
            if _builds == 0:
                _before = os.environ.get(VARIABLE)
                os.environ[VARIABLE] = "true"
            _builds += 1
    if not wanted:
        yield False
        return
    try:
        yield True
    finally:
        with _lock:
            _builds -= 1
            if _builds == 0:
                if _before is None:
                    os.environ.pop(VARIABLE, None)
                else:
                    os.environ[VARIABLE] = _before
