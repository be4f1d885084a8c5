"""Load the datasets named in the config (files or hub, in memory-mapped Arrow or streamed), align
each to the standard structure, and mix them (`concat`, `interleave_under`, `interleave_over`)."""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.aligner import align
from lf_data.dataset_info import HUB_NAMES, DatasetAttr, get_dataset_attr
from lf_data.errors import ConfigError, DataError

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet",
                 ".arrow": "arrow", ".txt": "text"}
MAX_LISTED_ERRORS = 10


def data_files(attr: DatasetAttr) -> tuple[str, list[str]]:
    """The `datasets` builder and the files of a local dataset (a file, or every file of a folder)."""
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


TEXT_BUILDERS = ("json", "csv", "text")
FIX_UTF8 = "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW)"


def _is_blank(path: str) -> bool:
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            if block.strip():
                return False
    return True


def _utf8_problem(path: str) -> str | None:
    """`file:line:` of the first byte that is not UTF-8. pyarrow reads such JSON Lines without a word and
    fails only when the row is used, so every text file is checked (decoded in large blocks, fast)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 22)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                bad = offset - pending + err.start
                break
            if not block:
                return None
            offset += len(block)
        handle.seek(0)
        head = handle.read(bad + 1)
    line, line_start = head.count(b"\n", 0, bad) + 1, head.rfind(b"\n", 0, bad) + 1
    return (f"{path}:{line}: not valid UTF-8 (byte 0x{head[bad]:02x} at byte offset "
            f"{bad}, column {bad - line_start + 1}); {FIX_UTF8}.")


def _json_problem(path: str) -> str | None:
    """`file:line:` of the first JSON error: one JSON document (an array) or JSON Lines."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16).removeprefix(codecs.BOM_UTF8)  # datasets skips a byte-order mark too

    def document() -> str | None:
        try:
            rows = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            return (f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno}); fix the file "
                    "(a .json file holds one array of rows, or one row object per line).")
        return f"{path}: holds an empty array: no rows; add rows or fix `file_name`." if rows == [] else None

    if head.lstrip().startswith(b"["):
        return document()
    with open(path, encoding="utf-8-sig") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # columns counted within the line
            except json.JSONDecodeError as err:
                if lineno == 1:  # perhaps one document spread over many lines
                    return document()
                return (f"{path}:{lineno}: not valid JSON: {err.msg} (column {err.colno}); each line of a JSON "
                        "Lines file must be one complete row object.")
            if not isinstance(row, dict):
                return (f"{path}:{lineno}: a JSON Lines row must be an object ({{\"column\": value, ...}}), "
                        f"found {type(row).__name__}.")
    return None


def file_problem(path: str, builder: str) -> str | None:
    """Why `datasets` cannot read a file, as `file:line: problem; fix` (None: no known reason).

    Only run after `datasets` failed, so well-formed files are not parsed twice."""
    return _json_problem(path) if builder == "json" else None


def check_files(attr: DatasetAttr, builder: str, files: list[str]) -> None:
    """Refuse empty files and text that is not UTF-8 before `datasets` turns them into a confusing
    error, zero columns, or a crash in the middle of tokenising."""
    for path in files:
        if _is_blank(path):
            raise DataError(f"{path}: the file is empty; put the rows of {attr} in it, or fix `file_name` "
                            "in dataset_info.json.")
        problem = _utf8_problem(path) if builder in TEXT_BUILDERS else None
        if problem:
            raise DataError(problem)


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


@dataclass
class HubCredentials:
    """Tokens and cache folder for hub datasets, from the run's model keys (hf_hub_token, ms_hub_token,
    om_hub_token, cache_dir). None: the client's own default (its environment variable or saved login)."""

    hf: str | None = None
    ms: str | None = None
    om: str | None = None
    cache_dir: str | None = None


def _hub_client(attr: DatasetAttr, module: str, install: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{attr} is on {HUB_NAMES[attr.source]}; reading it needs its client: {install}.") from None


def _load_modelscope(attr: DatasetAttr, streaming: bool, hub: HubCredentials) -> Dataset | IterableDataset:
    """ModelScope's MsDataset.load, handed back as a `datasets` dataset."""
    modelscope = _hub_client(attr, "modelscope", "pip install modelscope (or 'lf-models[modelscope]')")
    kwargs: dict[str, Any] = {"subset_name": attr.subset, "split": attr.split, "data_dir": attr.folder,
                              "token": hub.ms, "use_streaming": streaming}
    if hub.cache_dir:
        kwargs["cache_dir"] = hub.cache_dir
    dataset = modelscope.MsDataset.load(attr.location, **kwargs)
    return dataset.to_hf_dataset() if isinstance(dataset, modelscope.MsDataset) else dataset


def _load_openmind(attr: DatasetAttr, streaming: bool, hub: HubCredentials) -> Dataset | IterableDataset:
    """The Modelers repository downloaded with openmind_hub, then read by `datasets` from the local copy."""
    import datasets

    om_hub = _hub_client(attr, "openmind_hub", "pip install openmind-hub")
    local = om_hub.snapshot_download(repo_id=attr.location, repo_type="dataset", token=hub.om,
                                     cache_dir=hub.cache_dir)
    return datasets.load_dataset(str(local), name=attr.subset, split=attr.split, data_dir=attr.folder,
                                 streaming=streaming)


def load_raw(attr: DatasetAttr, streaming: bool = False, hub: HubCredentials | None = None) -> Dataset | IterableDataset:
    """The dataset as stored, through `datasets` (Arrow-backed and memory-mapped, or streamed); `hub`:
    the run's hub tokens and cache folder (the model keys hf_hub_token, ms_hub_token, om_hub_token, cache_dir)."""
    import datasets

    hub = hub or HubCredentials()
    if attr.source == "file":
        builder, files = data_files(attr)
        check_files(attr, builder, files)
        where = files[0] if len(files) == 1 else attr.location
        try:
            return datasets.load_dataset(builder, data_files=files, split="train", streaming=streaming)
        except Exception as err:  # a parse error deep in pyarrow: find the file and line ourselves
            for path in files:
                problem = file_problem(path, builder)
                if problem:
                    raise DataError(problem) from None
            if "corresponds to no data" in str(err):  # datasets' words for zero rows
                raise DataError(f"{attr}: {where} holds no rows; add rows or fix `file_name`.") from None
            raise DataError(f"{attr}: could not read {where}: {_one_line(err)}") from None
    try:
        if attr.source == "ms_hub":
            return _load_modelscope(attr, streaming, hub)
        if attr.source == "om_hub":
            return _load_openmind(attr, streaming, hub)
        extra = {"token": hub.hf} if hub.hf else {}
        return datasets.load_dataset(attr.location, name=attr.subset, split=attr.split, data_dir=attr.folder,
                                     streaming=streaming, cache_dir=hub.cache_dir, **extra)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{attr}: could not load it from {HUB_NAMES[attr.source]} ({_one_line(err)}). "
                        "Without network access, download it and describe it with `file_name`.") from None


@dataclass
class AlignedData:
    """Aligned rows, plus how many rows were read and the problems of the invalid ones."""

    dataset: Dataset | IterableDataset
    rows_read: int | None = None  # None when streaming
    errors: list[str] = field(default_factory=list)
    invalid: int = 0


def _resize(attr: DatasetAttr, raw, max_samples: int | None, streaming: bool, seed: int):
    """Apply the entry's `num_samples` (sampled, repeating rows when it exceeds the data) and then
    the config's `max_samples` (the first rows)."""
    if attr.num_samples is not None and not streaming:
        import random

        size = len(raw)
        order = list(range(size))
        random.Random(seed).shuffle(order)
        indices = order * (attr.num_samples // size) + order[:attr.num_samples % size]
        raw = raw.select(indices)
    elif attr.num_samples is not None:
        raw = raw.take(attr.num_samples)
    if max_samples is not None:
        raw = raw.take(max_samples) if streaming else raw.select(range(min(len(raw), max_samples)))
    return raw


def mix(parts: list, strategy: str, probs: list[float] | None, seed: int):
    from datasets import concatenate_datasets, interleave_datasets

    if len(parts) == 1:
        return parts[0]
    if strategy == "concat":
        return concatenate_datasets(parts)
    if probs is not None and len(probs) != len(parts):
        raise ConfigError(f"interleave_probs has {len(probs)} values for {len(parts)} datasets; give one each.")
    stopping = "first_exhausted" if strategy == "interleave_under" else "all_exhausted"
    return interleave_datasets(parts, probabilities=probs, seed=seed, stopping_strategy=stopping)


def non_empty(dataset: Dataset, column: str) -> list[str]:
    """Non-empty values of a string column, read as one Arrow column instead of row by row."""
    import pyarrow.compute as pc

    values = dataset.with_format("arrow")[column]  # respects a filtered dataset's indices
    return pc.filter(values, pc.not_equal(values, "")).to_pylist()


def _stream_check(error: str, skip_invalid: bool) -> bool:
    if error and not skip_invalid:
        raise DataError(f"invalid row {error} (set skip_invalid: true to drop such rows)")
    return not error


def load_aligned(names: list[str], dataset_dir: str, *, max_samples: int | None = None, num_proc: int | None = None,
                 streaming: bool = False, mix_strategy: str = "concat", interleave_probs: list[float] | None = None,
                 seed: int = 42, media_dir: str | None = None, skip_invalid: bool = False,
                 needs_response: bool = True, then: Any = None, features: Any = None,
                 batch_size: int = 1000, hub: HubCredentials | None = None) -> AlignedData:
    """Load, align and mix the named datasets; invalid rows are found, counted and set apart.

    `then` transforms each aligned batch in the same pass (see `aligner.align`); its output keeps
    the `_error` column so invalid rows are still counted and listed here.
    """
    attrs = [get_dataset_attr(name, dataset_dir) for name in names]  # every name checked before loading
    parts, errors, invalid, read = [], [], 0, 0
    for attr in attrs:
        raw = _resize(attr, load_raw(attr, streaming, hub), max_samples, streaming, seed)
        aligned = align(attr, raw, Path(media_dir or dataset_dir), None if streaming else num_proc, needs_response,
                        then, features, batch_size)
        if streaming:
            aligned = aligned.filter(_stream_check, fn_kwargs={"skip_invalid": skip_invalid}, input_columns="_error")
        else:
            read += len(aligned)
            found = non_empty(aligned, "_error")
            if found:
                invalid += len(found)
                errors += found[:MAX_LISTED_ERRORS - len(errors)] if len(errors) < MAX_LISTED_ERRORS else []
                aligned = aligned.filter(lambda e: not e, input_columns="_error")
        parts.append(aligned.remove_columns("_error"))
    return AlignedData(mix(parts, mix_strategy, interleave_probs, seed), None if streaming else read, errors, invalid)
