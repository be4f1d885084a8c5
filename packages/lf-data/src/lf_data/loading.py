"""Load the datasets named in the config and align every formatting to one standard structure.

Standard row: ``_messages`` (a list of ``{"role", "content"}`` with roles user / assistant /
observation / function, user-side and assistant-side turns alternating), ``_system`` and ``_tools``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.dataset_info import DatasetAttr, get_dataset_attr
from lf_data.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet",
                 ".arrow": "arrow", ".txt": "text"}
USER_SIDE = ("user", "observation")
ASSISTANT_SIDE = ("assistant", "function")


def _data_files(attr: DatasetAttr) -> tuple[str, list[str]]:
    path = Path(attr.location)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        files = [str(path)]
    else:
        raise DataError(f"{attr}: file {str(path)!r} does not exist. Put the file there or fix "
                        "`file_name` in dataset_info.json (it is relative to dataset_dir).")
    if not files:
        raise DataError(f"{attr}: folder {str(path)!r} is empty.")
    suffixes = {Path(f).suffix.lower() for f in files}
    builders = {FILE_BUILDERS.get(s) for s in suffixes}
    if None in builders or len(builders) != 1:
        raise DataError(f"{attr}: cannot read files with suffix(es) {sorted(suffixes)}; use one of "
                        f"{', '.join(FILE_BUILDERS)} (all files of a folder must share one type).")
    return builders.pop(), files


def load_raw(attr: DatasetAttr) -> Dataset:
    """The dataset as stored (through `datasets`, so Arrow-backed and memory-mapped)."""
    import datasets

    if attr.source == "file":
        builder, files = _data_files(attr)
        try:
            return datasets.load_dataset(builder, data_files=files, split="train")
        except Exception as err:  # a parse error deep in pyarrow: name the file
            raise DataError(f"{attr}: could not read {files[0] if len(files) == 1 else attr.location}: "
                            f"{type(err).__name__}: {err}") from None
    try:
        return datasets.load_dataset(attr.location, name=attr.subset, split=attr.split, data_dir=attr.folder)
    except Exception as err:
        raise DataError(f"{attr}: could not load it from the Hugging Face hub ({type(err).__name__}: {err}). "
                        "Without network access, download it and describe it with `file_name`.") from None


def _text(attr: DatasetAttr, index: int, column: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{attr} row {index}: column {column!r} must hold text, found {type(value).__name__}.")
    return value


def _align_alpaca(attr: DatasetAttr, row: dict[str, Any], index: int) -> list[dict[str, str]]:
    cols = attr.columns
    messages: list[dict[str, str]] = []
    if cols.get("history") and row.get(cols["history"]):
        history = row[cols["history"]]
        for turn in history:
            if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
                raise DataError(f"{attr} row {index}: column {cols['history']!r} must be a list of "
                                "[instruction, response] pairs.")
            messages += [{"role": "user", "content": _text(attr, index, cols["history"], turn[0])},
                         {"role": "assistant", "content": _text(attr, index, cols["history"], turn[1])}]
    prompt = _text(attr, index, cols["prompt"], row.get(cols["prompt"]))
    query = _text(attr, index, cols["query"], row.get(cols["query"])) if cols.get("query") else ""
    content = "\n".join(part for part in (prompt, query) if part)
    response = _text(attr, index, cols["response"], row.get(cols["response"]))
    if not content:
        raise DataError(f"{attr} row {index}: empty prompt (column {cols['prompt']!r}).")
    if not response:
        raise DataError(f"{attr} row {index}: empty response (column {cols['response']!r}).")
    messages += [{"role": "user", "content": content}, {"role": "assistant", "content": response}]
    return messages


def _align_sharegpt(attr: DatasetAttr, row: dict[str, Any], index: int) -> tuple[list[dict[str, str]], str]:
    tags, column = attr.tags, attr.columns["messages"]
    role_of = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant",
               tags["observation_tag"]: "observation", tags["function_tag"]: "function",
               tags["system_tag"]: "system"}
    raw = row.get(column)
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{attr} row {index}: column {column!r} must be a non-empty list of messages.")
    system = ""
    messages = []
    for turn_index, turn in enumerate(raw):
        if not isinstance(turn, dict) or tags["role_tag"] not in turn or tags["content_tag"] not in turn:
            raise DataError(f"{attr} row {index}, message {turn_index}: each message needs the keys "
                            f"{tags['role_tag']!r} and {tags['content_tag']!r} (set `tags` in dataset_info.json "
                            "if your data uses other names).")
        role = role_of.get(turn[tags["role_tag"]])
        if role is None:
            raise DataError(f"{attr} row {index}, message {turn_index}: unknown role "
                            f"{turn[tags['role_tag']]!r}; expected one of {sorted(role_of)}.")
        content = _text(attr, index, column, turn[tags["content_tag"]])
        if role == "system":
            if turn_index != 0:
                raise DataError(f"{attr} row {index}, message {turn_index}: a system message may only come first.")
            system = content
            continue
        expected = USER_SIDE if len(messages) % 2 == 0 else ASSISTANT_SIDE
        if role not in expected:
            raise DataError(f"{attr} row {index}, message {turn_index}: role {role!r} is out of order; "
                            "user (or observation) and assistant (or function) messages must alternate, "
                            "starting with the user.")
        messages.append({"role": role, "content": content})
    if len(messages) % 2 != 0:
        raise DataError(f"{attr} row {index}: the conversation must end with an assistant message.")
    return messages, system


def align(attr: DatasetAttr, dataset: Dataset, num_proc: int | None = None) -> Dataset:
    """Convert a raw dataset into the standard structure, naming the first bad row if any."""
    cols = attr.columns
    required = [cols["prompt"], cols["response"]] if attr.formatting == "alpaca" else [cols["messages"]]
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise DataError(f"{attr}: column(s) {missing} not found; the file has {dataset.column_names}. "
                        "Rename them in the file or map them with `columns` in dataset_info.json.")
    if attr.ranking:
        raise DataError(f"{attr} is a preference (ranking) dataset; supervised fine-tuning needs "
                        "conversations. Use it with a preference stage.")

    def convert(row: dict[str, Any], index: int) -> dict[str, Any]:
        system = ""
        if attr.formatting == "alpaca":
            messages = _align_alpaca(attr, row, index)
        else:
            messages, system = _align_sharegpt(attr, row, index)
        if cols.get("system") and row.get(cols["system"]):
            system = _text(attr, index, cols["system"], row[cols["system"]])
        tools = row.get(cols["tools"]) if cols.get("tools") else None
        return {"_messages": messages, "_system": system, "_tools": tools if isinstance(tools, str) else ""}

    return dataset.map(convert, with_indices=True, remove_columns=dataset.column_names, num_proc=num_proc,
                       desc=f"Aligning {attr.name}")


def load_aligned(names: list[str], dataset_dir: str, max_samples: int | None = None,
                 num_proc: int | None = None) -> Dataset:
    """Load, align and concatenate the named datasets."""
    from datasets import concatenate_datasets

    attrs = [get_dataset_attr(name, dataset_dir) for name in names]  # all names checked before loading
    parts = []
    for attr in attrs:
        raw = load_raw(attr)
        limit = min(x for x in (attr.num_samples, max_samples, len(raw)) if x is not None)
        raw = raw.select(range(limit))
        parts.append(align(attr, raw, num_proc))
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)
