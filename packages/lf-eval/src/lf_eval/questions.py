"""Multiple-choice questions from a task folder (or the hub): the MMLU / C-Eval / CMMLU layouts.

A task folder `{task_dir}/{name}` holds one CSV file per subject and split, in `data/{split}/` or
directly in `{split}/` (split: dev, val or test), named `{subject}_{split}.csv` or `{subject}.csv`.
Rows are `question,A,B,C,D,answer` without a header (MMLU), or have a header row naming the columns
`question`, `A`-`D` and `answer` in any order and case, other columns ignored (C-Eval: id,...,
explanation; CMMLU: an unnamed index column). `dev` holds the few-shot examples.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lf_data.errors import ConfigError, DataError
from lf_eval.args import EvalArguments
from lf_eval.benchmarks import BENCHMARKS, Benchmark, Subject

logger = logging.getLogger(__name__)
CHOICES = ("A", "B", "C", "D")
SPLITS = {"dev": "dev", "train": "dev", "val": "val", "validation": "val", "test": "test"}
SPLIT_FOLDERS = {"dev": ("dev",), "val": ("val", "validation"), "test": ("test",)}
MAPPING_FILE = "mapping.json"
MMLU_COLUMNS = ("question", "a", "b", "c", "d", "answer")


@dataclass(frozen=True)
class Question:
    question: str
    options: tuple[str, ...]
    answer: str | None
    """The correct letter; None where the split's answers are not public (C-Eval test)."""
    where: str
    """File and row, for messages."""


@dataclass
class TaskData:
    name: str
    split: str
    lang: str
    source: str
    """The folder (or hub repository) the questions came from."""
    subjects: dict[str, Subject]
    questions: dict[str, list[Question]]
    shots: dict[str, list[Question]]


def parse_task(task: str) -> tuple[str, str]:
    """`mmlu_test` -> ("mmlu", "test"); the split is the part after the last underscore."""
    name, _, split = task.rpartition("_")
    if not name or split not in SPLITS:
        raise ConfigError(f"task {task!r} is not NAME_SPLIT: name a benchmark and a split, for example mmlu_test, "
                          f"ceval_val or cmmlu_test (splits: dev, val, test), or use task: predict.")
    return name, SPLITS[split]


# -- reading one CSV file --------------------------------------------------------------------------
def read_subject_csv(path: Path, need_answers: bool) -> list[Question]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _read_rows(path, csv.reader(handle), need_answers)
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8.") from None
    except csv.Error as err:
        raise DataError(f"{path} is not a valid CSV file: {err}.") from None


def _read_rows(path: Path, reader: Any, need_answers: bool) -> list[Question]:
    columns: dict[str, int] | None = None
    headerless = False
    questions = []
    for row in reader:
        where = f"{path}, row {reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if columns is None:
            cells = [cell.strip().lower() for cell in row]
            if {"question", "a", "b", "c", "d"} <= set(cells):  # a header row names the columns
                columns = {name: cells.index(name) for name in MMLU_COLUMNS if name in cells}
                if need_answers and "answer" not in columns:
                    raise DataError(f"{path} has no `answer` column, so its questions cannot be scored (C-Eval's "
                                    "test answers are not public: evaluate its val split, e.g. ceval_val).")
                continue
            columns, headerless = {name: i for i, name in enumerate(MMLU_COLUMNS)}, True
        if headerless and len(row) != len(MMLU_COLUMNS):
            raise DataError(f"{where}: {len(row)} cells, expected 6 (question,A,B,C,D,answer). Quote cells that "
                            "contain commas, or start the file with a header row naming the columns.")
        if len(row) <= max(columns.values()):
            raise DataError(f"{where}: {len(row)} cells, but the header names {max(columns.values()) + 1} columns.")
        question = row[columns["question"]].strip()
        options = tuple(row[columns[letter.lower()]].strip() for letter in CHOICES)
        answer = row[columns["answer"]].strip().upper() if "answer" in columns else None
        if not question:
            raise DataError(f"{where}: the question is empty.")
        if answer is not None and answer not in CHOICES:
            raise DataError(f"{where}: answer {row[columns['answer']]!r} is not one of {', '.join(CHOICES)}.")
        if need_answers and answer is None:
            raise DataError(f"{where}: no answer given.")
        questions.append(Question(question, options, answer, where))
    if not questions:
        raise DataError(f"{path} holds no questions.")
    return questions


# -- a whole task ----------------------------------------------------------------------------------
def split_folder(root: Path, split: str) -> Path | None:
    for base in (root / "data", root):
        for folder in SPLIT_FOLDERS[split]:
            if (base / folder).is_dir():
                return base / folder
    return None


def subject_file(folder: Path | None, subject: str, split: str) -> Path | None:
    if folder is None:
        return None
    for name in (f"{subject}_{split}.csv", f"{subject}.csv", f"{subject}_validation.csv" if split == "val" else ""):
        if name and (folder / name).is_file():
            return folder / name
    return None


def subjects_on_disk(folder: Path, split: str) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.csv")):
        stem = path.stem
        for suffix in (f"_{split}", "_validation"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        names.append(stem)
    return names


def _read_mapping(root: Path) -> dict[str, Subject]:
    path = root / MAPPING_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}.") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} must hold an object {{subject: {{\"name\": ..., \"category\": ...}}}}.")
    mapping = {}
    for subject, entry in raw.items():
        if not isinstance(entry, dict) or "category" not in entry:
            raise DataError(f"{path}: subject {subject!r} must map to {{\"name\": ..., \"category\": ...}}.")
        mapping[subject] = Subject(str(entry.get("name") or subject.replace("_", " ")), str(entry["category"]))
    return mapping


def _select(available: dict[str, Subject], wanted: list[str] | None, task: str) -> dict[str, Subject]:
    if not wanted:
        return available
    selected = {}
    for subject in wanted:
        if subject not in available:
            close = difflib.get_close_matches(subject, list(available), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"subjects: {subject!r} is not a subject of task {task!r}.{hint}")
        selected[subject] = available[subject]
    return selected


def load_task(args: EvalArguments) -> TaskData:
    """Every question of the task's split and the few-shot examples, checked before any model loads."""
    assert args.task is not None
    name, split = parse_task(args.task)
    benchmark = BENCHMARKS.get(name)
    lang = args.lang or (benchmark.lang if benchmark else "en")
    root = Path(args.task_dir) / name
    if root.is_dir():
        return _load_local(root, name, split, lang, benchmark, args)
    if benchmark is not None:
        return _load_hub(benchmark, split, lang, args, root)
    known = ", ".join(BENCHMARKS)
    raise ConfigError(f"task folder {str(root)!r} does not exist. Put the task there ({name}/data/{split}/"
                      f"{{subject}}_{split}.csv, with dev/ for few-shot examples), set task_dir to the folder that "
                      f"holds it, or use a benchmark LF can download: {known}.")


def _load_local(root: Path, name: str, split: str, lang: str, benchmark: Benchmark | None,
                args: EvalArguments) -> TaskData:
    folder = split_folder(root, split)
    if folder is None:
        raise ConfigError(f"task folder {str(root)!r} has no {split} split: expected {root}/data/{split}/ (or "
                          f"{root}/{split}/) with one CSV file per subject.")
    mapping = _read_mapping(root)
    if benchmark is not None:
        available = {**benchmark.subjects, **mapping}
    else:  # a task LF does not know: the subjects are the files; mapping.json may name and sort them
        available = {s: mapping.get(s, Subject(s.replace("_", " "), "Other")) for s in subjects_on_disk(folder, split)}
    subjects = _select(available, args.subjects, name)
    dev = split_folder(root, "dev") if args.n_shot else None
    missing = [s for s in subjects if subject_file(folder, s, split) is None]
    if missing:
        raise ConfigError(f"task {name!r}: {len(missing)} of {len(subjects)} subjects have no {split} file in "
                          f"{folder} (e.g. {missing[0]!r}: expected {folder / f'{missing[0]}_{split}.csv'}). Add "
                          "the files, or list the subjects to evaluate in `subjects`.")
    questions, shots = {}, {}
    for subject in subjects:
        questions[subject] = read_subject_csv(subject_file(folder, subject, split), need_answers=True)
        if args.n_shot:
            shots[subject] = _read_shots(subject_file(dev, subject, "dev"), dev or root / "data" / "dev",
                                         subject, args.n_shot)
    return TaskData(name, split, lang, str(root), subjects, questions, shots)


def _read_shots(path: Path | None, folder: Path, subject: str, n_shot: int) -> list[Question]:
    if path is None:
        raise ConfigError(f"n_shot={n_shot} takes examples from the dev split, but {folder / f'{subject}_dev.csv'} "
                          "does not exist. Add it, or set n_shot: 0.")
    shots = read_subject_csv(path, need_answers=True)
    if len(shots) < n_shot:
        raise ConfigError(f"n_shot={n_shot} but {path} holds only {len(shots)} examples; lower n_shot.")
    return shots[:n_shot]


def _load_hub(benchmark: Benchmark, split: str, lang: str, args: EvalArguments, root: Path) -> TaskData:
    if split not in benchmark.hub_splits:
        raise ConfigError(f"{benchmark.name} has no {split} split on the hub; use one of "
                          f"{', '.join(benchmark.hub_splits)}.")
    subjects = _select(dict(benchmark.subjects), args.subjects, benchmark.name)
    questions, shots = {}, {}
    for subject in subjects:
        questions[subject] = _hub_rows(benchmark, subject, split, root)
        if args.n_shot:
            shots[subject] = _hub_rows(benchmark, subject, "dev", root)[: args.n_shot]
    return TaskData(benchmark.name, split, lang, benchmark.hub_id, subjects, questions, shots)


def _hub_rows(benchmark: Benchmark, subject: str, split: str, root: Path) -> list[Question]:
    from datasets import load_dataset

    hub_split = benchmark.hub_splits[split]
    try:
        rows = load_dataset(benchmark.hub_id, subject, split=hub_split)
    except Exception as err:  # offline, missing repository, changed layout: all end the same way
        raise ConfigError(f"task folder {str(root)!r} does not exist and {benchmark.hub_id} ({subject}, {hub_split}) "
                          f"could not be loaded from the hub ({type(err).__name__}: {err}). Download the benchmark "
                          f"and unpack it as {root}/data/{{dev,val,test}}/{{subject}}_{{split}}.csv.") from None
    return [hub_question(row, f"{benchmark.hub_id} {subject}/{hub_split} row {i + 1}") for i, row in enumerate(rows)]


def hub_question(row: dict[str, Any], where: str) -> Question:
    """One hub row -> Question: `choices` + integer `answer` (cais/mmlu) or A-D columns (C-Eval, CMMLU)."""
    lower = {str(k).lower(): v for k, v in row.items()}
    if "choices" in lower:
        options = tuple(str(c) for c in lower["choices"])
        answer = lower.get("answer")
        answer = CHOICES[answer] if isinstance(answer, int) and 0 <= answer < len(CHOICES) else answer
    else:
        options = tuple(str(lower.get(letter.lower(), "")) for letter in CHOICES)
        answer = lower.get("answer")
    if len(options) != len(CHOICES) or answer not in CHOICES:
        raise DataError(f"{where}: expected four options and an answer A-D, got {row!r}.")
    return Question(str(lower.get("question", "")).strip(), options, answer, where)
