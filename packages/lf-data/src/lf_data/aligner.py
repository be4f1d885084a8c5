"""Align every formatting (alpaca, sharegpt, openai; plain, ranking or KTO-tagged) to one structure.

Standard row:
- ``_prompt``: messages before the answer (user-side and assistant-side turns alternating, starting
  and ending with a user-side turn; roles user / observation and assistant / function),
- ``_response``: the answer: one message for SFT and KTO, [chosen, rejected] for preference data,
  empty for prompt-only data,
- ``_system``, ``_tools`` (JSON text), ``_images`` / ``_videos`` / ``_audios`` (paths or URLs),
- ``_kto_tag`` (True desirable, False undesirable, None when untagged).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.dataset_info import DatasetAttr
from lf_data.errors import DataError
from lf_data.messages import (
    ASSISTANT,
    ASSISTANT_SIDE,
    FUNCTION,
    OBSERVATION,
    SYSTEM,
    USER,
    MessageError,
    check_turns,
)

if TYPE_CHECKING:
    from datasets import Dataset

MEDIA = ("images", "videos", "audios")
PLACEHOLDERS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}


def place_markers(messages: list[dict[str, Any]], markers: dict[str, str]) -> list[dict[str, Any]]:
    """Messages with each placeholder written as a multimodal model's marker (`markers`: kind -> the
    model's special tokens for one item). A placeholder that is also one of the tokenizer's special
    tokens (LLaVA's `<image>`) was protected as literal text first; it is a marker all the same."""
    from lf_data.literal_text import CLOSE, OPEN

    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) and "<" in content:
            for kind, marker in markers.items():
                placeholder = PLACEHOLDERS[kind]
                content = content.replace(f"{OPEN}{placeholder}{CLOSE}", marker).replace(placeholder, marker)
            message = {**message, "content": content}
        out.append(message)
    return out
REMOTE_MEDIA = re.compile(r"^(https?://|data:)", re.IGNORECASE)


class RowError(DataError):
    """A bad row; `align` adds the dataset and row index."""


def _text(column: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"column {column!r} must hold text, found {type(value).__name__}")
    return value


def _tools(column: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    text = _text(column, value)
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise RowError(f"column {column!r} must hold tool definitions as JSON ({err.msg})") from None
    return text


def _local_media(kind: str, item: str, media_dir: Path) -> str:
    """The path of a local media file, refused when missing or outside `media_dir`: a row must not
    make training read (or a text model train on the placeholder of) a file it cannot have."""
    what = kind[:-1]  # images -> image
    root = os.path.abspath(media_dir)
    path = os.path.abspath(os.path.join(root, item))  # an absolute item replaces root; ".." is folded
    inside = os.path.commonpath([root, path]) == root
    if inside and ".." in Path(item).parts:  # a ".." after a symlink may still leave: ask the file system
        real_root = os.path.realpath(root)
        inside = os.path.commonpath([real_root, os.path.realpath(os.path.join(root, item))]) == real_root
    if not inside:
        raise RowError(f"{what} {item!r} is outside media_dir {root!r}; move the file under media_dir or set "
                       "media_dir to a folder that holds it")
    if not os.path.isfile(path):
        raise RowError(f"{what} {item!r} does not exist under media_dir {root!r}; add the file or fix the "
                       "path (relative paths start at media_dir, default dataset_dir)")
    return path


def _media(attr: DatasetAttr, column: str, value: Any, media_dir: Path, kind: str = "images") -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict) and "path" in item:  # datasets' Image feature stored as a dict
            item = item["path"]
        if not isinstance(item, str) or not item:
            raise RowError(f"column {column!r} must hold file paths or URLs")
        if REMOTE_MEDIA.match(item):  # fetched (or decoded) by whoever reads the media
            out.append(item)
        elif "://" in item:
            raise RowError(f"{kind[:-1]} {item!r} is neither an http(s)/data: URL nor a path under media_dir; "
                           "use a path relative to media_dir")
        else:
            out.append(_local_media(kind, item, media_dir))
    return out


def _alpaca(attr: DatasetAttr, row: dict[str, Any]) -> tuple[list, list]:
    cols = attr.columns
    prompt: list[dict[str, str]] = []
    if cols.get("history") and row.get(cols["history"]):
        for turn in row[cols["history"]]:
            if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
                raise RowError(f"column {cols['history']!r} must be a list of [instruction, response] pairs")
            prompt += [{"role": USER, "content": _text(cols["history"], turn[0])},
                       {"role": ASSISTANT, "content": _text(cols["history"], turn[1])}]
    instruction = _text(cols["prompt"], row.get(cols["prompt"]))
    query = _text(cols["query"], row.get(cols["query"])) if cols.get("query") else ""
    content = "\n".join(part for part in (instruction, query) if part)
    if not content:
        raise RowError(f"empty prompt (column {cols['prompt']!r})")
    prompt.append({"role": USER, "content": content})
    if attr.ranking:
        response = [{"role": ASSISTANT, "content": _text(cols["chosen"], row.get(cols["chosen"]))},
                    {"role": ASSISTANT, "content": _text(cols["rejected"], row.get(cols["rejected"]))}]
    elif cols.get("response") and row.get(cols["response"]) not in (None, ""):
        value = row[cols["response"]]
        if isinstance(value, list):  # alpaca-style ranking data stored as [chosen, rejected]
            value = value[0] if value else ""
        response = [{"role": ASSISTANT, "content": _text(cols["response"], value)}]
    else:
        response = []
    return prompt, response


def _sharegpt_message(attr: DatasetAttr, turn: Any, where: str) -> dict[str, str]:
    tags = attr.tags
    if not isinstance(turn, dict) or tags["role_tag"] not in turn or tags["content_tag"] not in turn:
        raise RowError(f"{where}each message needs the keys {tags['role_tag']!r} and {tags['content_tag']!r} "
                       "(set `tags` in dataset_info.json if your data uses other names)")
    role_of = {tags["user_tag"]: USER, tags["assistant_tag"]: ASSISTANT, tags["observation_tag"]: OBSERVATION,
               tags["function_tag"]: FUNCTION, tags["system_tag"]: SYSTEM}
    role = role_of.get(turn[tags["role_tag"]])
    if role is None:
        raise RowError(f"{where}unknown role {turn[tags['role_tag']]!r}; expected one of {sorted(role_of)}")
    content = turn[tags["content_tag"]]
    if role == FUNCTION and isinstance(content, (dict, list)):
        content = json.dumps(content, ensure_ascii=False)
    return {"role": role, "content": _text(tags["content_tag"], content)}


def _sharegpt(attr: DatasetAttr, row: dict[str, Any]) -> tuple[list, list, str]:
    column = attr.columns["messages"]
    raw = row.get(column)
    if not isinstance(raw, list) or not raw:
        raise RowError(f"column {column!r} must be a non-empty list of messages")
    messages = [_sharegpt_message(attr, turn, f"message {i}: ") for i, turn in enumerate(raw)]
    system = ""
    if messages[0]["role"] == SYSTEM:
        system = messages.pop(0)["content"]
    if any(m["role"] == SYSTEM for m in messages):
        raise RowError("a system message may only come first")
    try:
        check_turns(messages)
    except MessageError as err:
        raise RowError(str(err)) from None
    if attr.ranking:
        if len(messages) % 2 != 1:
            raise RowError("preference data must end with a user message; the answers go in the chosen and "
                           "rejected columns")
        cols = attr.columns
        response = [_sharegpt_message(attr, row.get(cols[key]), f"column {cols[key]!r}: ") for key in ("chosen", "rejected")]
        if any(m["role"] not in ASSISTANT_SIDE for m in response):
            raise RowError("chosen and rejected must be assistant messages")
        return messages, response, system
    if len(messages) % 2 == 0:
        return messages[:-1], messages[-1:], system
    return messages, [], system


def _kto_tag(attr: DatasetAttr, row: dict[str, Any]) -> bool | None:
    column = attr.columns.get("kto_tag")
    if not column:
        return None
    value = row.get(column)
    if not isinstance(value, bool):
        raise RowError(f"column {column!r} must be true (desirable) or false (undesirable), got {value!r}")
    return value


def align_row(attr: DatasetAttr, row: dict[str, Any], media_dir: Path, needs_response: bool = True) -> dict[str, Any]:
    cols = attr.columns
    system = ""
    if attr.formatting == "alpaca":
        prompt, response = _alpaca(attr, row)
    else:
        prompt, response, system = _sharegpt(attr, row)
    if cols.get("system") and row.get(cols["system"]):
        system = _text(cols["system"], row[cols["system"]])
    if cols.get("solution"):  # the reference answer (grpo's rewards read it), in place of any last answer
        solution = row.get(cols["solution"])
        response = [{"role": ASSISTANT, "content": _text(cols["solution"], solution)}] \
            if solution not in (None, "") else []
    if attr.ranking and any(not m["content"] for m in response):
        raise RowError("empty chosen or rejected answer")
    if needs_response and (not response or (len(response) == 1 and not response[0]["content"])):
        answer = cols.get("solution") or (cols["response"] if attr.formatting == "alpaca" else None)
        where = f" (column {answer!r})" if answer else ""
        raise RowError(f"empty response{where}" if response or attr.formatting == "alpaca" or cols.get("solution")
                       else "the conversation must end with an assistant message")
    aligned = {"_prompt": prompt, "_response": response, "_system": system,
               "_tools": _tools(cols["tools"], row.get(cols["tools"])) if cols.get("tools") else "",
               "_kto_tag": _kto_tag(attr, row)}
    for kind in MEDIA:
        aligned[f"_{kind}"] = _media(attr, cols[kind], row.get(cols[kind]), media_dir, kind) if cols.get(kind) else []
        if cols.get(kind):  # a mapped media column: every row's placeholders match its items, none with none
            text = "".join(m["content"] for m in prompt + response)
            found = text.count(PLACEHOLDERS[kind])
            if found != len(aligned[f"_{kind}"]):
                raise RowError(f"{len(aligned[f'_{kind}'])} {kind} given but the text has {found} "
                               f"{PLACEHOLDERS[kind]} placeholder(s); they must match")
    return aligned


def required_columns(attr: DatasetAttr, needs_response: bool = True) -> list[str]:
    cols = attr.columns
    if attr.formatting == "alpaca":
        answer = cols.get("solution") or cols["response"]
        answers = [cols["chosen"], cols["rejected"]] if attr.ranking else [answer] if needs_response else []
        needed = [cols["prompt"]] + answers
    else:
        needed = [cols["messages"]] + ([cols["chosen"], cols["rejected"]] if attr.ranking else [])
    if cols.get("kto_tag"):
        needed.append(cols["kto_tag"])
    return [c for c in needed if c]


EMPTY_ROW = {"_prompt": [], "_response": [], "_system": "", "_tools": "", "_kto_tag": None,
             "_images": [], "_videos": [], "_audios": []}


def align(attr: DatasetAttr, dataset: Dataset, media_dir: Path, num_proc: int | None = None,
          needs_response: bool = True, then: Any = None, features: Any = None, batch_size: int = 1000) -> Dataset:
    """Convert a raw dataset into the standard structure.

    Every row is checked; a bad row is kept as an empty row whose ``_error`` column says
    ``file:row: what is wrong``, so callers can list all problems at once.
    `then` (with its output `features`) runs on each aligned batch in the same pass: tokenising
    there saves writing and reading back the aligned rows, a good part of preprocessing time.
    """
    from datasets import IterableDataset

    streamed = isinstance(dataset, IterableDataset)
    names = dataset.column_names
    if streamed and names is None:  # column names unknown until the first row is read
        names = list(next(iter(dataset)))
    if names is not None:
        missing = [c for c in required_columns(attr, needs_response) if c not in names]
        if missing:
            raise DataError(f"{attr}: column(s) {missing} not found; the file has {names}. "
                            "Rename them in the file or map them with `columns` in dataset_info.json.")

    def convert(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {key: [] for key in (*EMPTY_ROW, "_error")}
        for offset, index in enumerate(indices):
            row = {key: values[offset] for key, values in batch.items()}
            try:
                aligned, error = align_row(attr, row, media_dir, needs_response), ""
            except RowError as err:
                aligned, error = EMPTY_ROW, f"{attr.location}:{index}: {err}"
            for key, value in aligned.items():
                out[key].append(value)
            out["_error"].append(error)
        return out if then is None else then(out)

    if streamed:
        return dataset.map(convert, batched=True, with_indices=True, remove_columns=names, features=features,
                           batch_size=batch_size)
    # whether a media file exists is not part of datasets' fingerprint: never reuse its cached result
    fresh = {"load_from_cache_file": False} if any(attr.columns.get(kind) for kind in MEDIA) else {}
    return dataset.map(convert, batched=True, with_indices=True, remove_columns=names, num_proc=num_proc,
                       features=features, batch_size=batch_size, desc=f"Preparing {attr.name}", **fresh)
