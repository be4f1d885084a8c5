"""`dataset_info.json`: the description of each named dataset (compatible with LlamaFactory's)."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lf_data.errors import DataError

DATASET_INFO = "dataset_info.json"
FORMATTINGS = ("alpaca", "sharegpt", "openai")

# Column names each formatting reads by default; `columns` in an entry renames them.
_COMMON = {"system": None, "tools": None, "images": None, "videos": None, "audios": None, "chosen": "chosen",
           "rejected": "rejected", "kto_tag": None, "solution": None}
DEFAULT_COLUMNS = {
    "alpaca": {**_COMMON, "prompt": "instruction", "query": "input", "response": "output", "history": None},
    "sharegpt": {**_COMMON, "messages": "conversations"},
    "openai": {**_COMMON, "messages": "messages"},
}
DEFAULT_TAGS = {
    "sharegpt": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"},
    "openai": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function", "system_tag": "system"},
}
KNOWN_ENTRY_KEYS = {"file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "subset", "split",
                    "folder", "formatting", "ranking", "columns", "tags", "num_samples"}
KNOWN_COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos",
                 "audios", "chosen", "rejected", "kto_tag", "solution"}


@dataclass
class DatasetAttr:
    name: str
    source: str  # "file", "hf_hub", "ms_hub" (ModelScope) or "om_hub" (Modelers)
    location: str  # a path for files, a repository id for a hub
    formatting: str = "alpaca"
    ranking: bool = False
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    columns: dict[str, str | None] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"dataset {self.name!r} ({self.location})"


HUB_NAMES = {"hf_hub": "the Hugging Face hub", "ms_hub": "ModelScope", "om_hub": "Modelers (openMind)"}


def _enabled(variable: str) -> bool:
    return os.environ.get(variable, "0").strip().lower() in ("1", "true", "y", "yes")


def use_modelscope() -> bool:
    """USE_MODELSCOPE_HUB=1: models and datasets come from ModelScope (LlamaFactory's switch)."""
    return _enabled("USE_MODELSCOPE_HUB")


def use_openmind() -> bool:
    """USE_OPENMIND_HUB=1: models and datasets come from Modelers (openMind)."""
    return _enabled("USE_OPENMIND_HUB")


def hub_source(entry: dict[str, Any]) -> tuple[str, str] | None:
    """(source, repository id) of an entry's hub copy, chosen as LlamaFactory does: ModelScope when
    USE_MODELSCOPE_HUB is set or the entry has no Hugging Face id, then Modelers likewise, else Hugging Face."""
    has_hf = "hf_hub_url" in entry
    if "ms_hub_url" in entry and (use_modelscope() or not has_hf):
        return "ms_hub", entry["ms_hub_url"]
    if "om_hub_url" in entry and (use_openmind() or not has_hf):
        return "om_hub", entry["om_hub_url"]
    return ("hf_hub", entry["hf_hub_url"]) if has_hf else None


def read_dataset_info(dataset_dir: str | Path) -> dict[str, Any]:
    path = Path(dataset_dir) / DATASET_INFO
    if not path.is_file():
        raise DataError(f"{path} does not exist. Set dataset_dir to the folder that holds "
                        f"{DATASET_INFO} (it describes each dataset by name).")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}.") from None
    if not isinstance(info, dict):
        raise DataError(f"{path} must be a JSON object mapping dataset names to descriptions.")
    return info


def get_dataset_attr(name: str, dataset_dir: str | Path) -> DatasetAttr:
    info = read_dataset_info(dataset_dir)
    info_path = Path(dataset_dir) / DATASET_INFO
    if name not in info:
        close = difflib.get_close_matches(name, list(info), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"dataset {name!r} is not described in {info_path}.{hint} "
                        f"Known datasets: {', '.join(sorted(info)) or 'none'}.")
    entry = info[name]
    if not isinstance(entry, dict):
        raise DataError(f"{info_path}: entry {name!r} must be a JSON object.")
    unknown = set(entry) - KNOWN_ENTRY_KEYS
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, sorted(KNOWN_ENTRY_KEYS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"{info_path}: entry {name!r} has unknown key {key!r}.{hint}")

    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise DataError(f"{info_path}: entry {name!r} has formatting {formatting!r}; "
                        f"use one of {', '.join(FORMATTINGS)}.")
    hub = hub_source(entry)
    if hub is not None:  # a hub id wins over file_name, as in LlamaFactory
        source, location = hub
    elif "file_name" in entry:
        source, location = "file", str(Path(dataset_dir) / entry["file_name"])
    else:
        raise DataError(f"{info_path}: entry {name!r} needs `file_name` (a local file or folder) or a dataset id: "
                        "`hf_hub_url` (Hugging Face), `ms_hub_url` (ModelScope) or `om_hub_url` (Modelers).")
    if source != "file" and (not isinstance(location, str) or not location.strip()):
        raise DataError(f"{info_path}: entry {name!r} has an empty {source}_url; give the dataset's repository id.")

    columns = dict(DEFAULT_COLUMNS[formatting])
    user_columns = entry.get("columns", {}) or {}
    bad = set(user_columns) - KNOWN_COLUMNS
    if bad:
        raise DataError(f"{info_path}: entry {name!r} maps unknown column role(s) {sorted(bad)}; "
                        f"known roles are {', '.join(sorted(KNOWN_COLUMNS))}.")
    columns.update(user_columns)
    tags = dict(DEFAULT_TAGS.get(formatting, {}))
    tags.update(entry.get("tags", {}) or {})
    return DatasetAttr(
        name=name, source=source, location=location, formatting=formatting,
        ranking=bool(entry.get("ranking", False)), subset=entry.get("subset"),
        split=entry.get("split", "train"), folder=entry.get("folder"),
        num_samples=entry.get("num_samples"), columns=columns, tags=tags,
    )


MEDIA_COLUMNS = ("images", "videos", "audios")


def media_kinds(names: list[str], dataset_dir: str | Path) -> dict[str, list[str]]:
    """The media columns (images, videos, audios) each named dataset maps, read from dataset_info.json
    alone, so a run can refuse media its model cannot take before anything loads."""
    kinds = {}
    for name in names:
        columns = get_dataset_attr(name, dataset_dir).columns
        found = [kind for kind in MEDIA_COLUMNS if columns.get(kind)]
        if found:
            kinds[name] = found
    return kinds
