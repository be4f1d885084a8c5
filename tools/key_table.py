"""Write docs/llamafactory-keys.md: every LlamaFactory 0.9.5 configuration key and what LF does with it.

Run: uv run python tools/key_table.py [--check]

The table is built from `lf_data.llamafactory_keys.KEYS` (LlamaFactory's keys and LF's notes on the
ones it does not read itself) and from LF's own config sections, so it cannot drift from the code:
a key LF reads is listed with the commands that read it and the first line of its docstring. With
--check it writes nothing and exits 1 when the file is out of date or a key has no answer (a test
runs this).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "llamafactory-keys.md"
HEADER = """# LlamaFactory 0.9.5 keys in LF

Every key of LlamaFactory 0.9.5's argument classes (`hparams/`: model, data, finetuning, generating,
training, evaluation), and what LF does with it. A LlamaFactory recipe runs unchanged: each key is an
LF key, passed on to transformers, renamed, ignored with a reason, or accepted at LlamaFactory's default
and refused with a reason otherwise. Keys of transformers' `TrainingArguments` that LlamaFactory
passes through are passed through by `lf train` too (not listed).

Written by `tools/key_table.py` from `lf_data/llamafactory_keys.py` and LF's config sections; do not
edit by hand.

| key | LlamaFactory group | LF | notes |
|---|---|---|---|
"""


def command_sections() -> dict[str, tuple[type, ...]]:
    from lf_eval.args import EvalArguments
    from lf_eval.run import serve_sections
    from lf_models.export import EXPORT_SECTIONS
    from lf_serve.args import GeneratingArguments
    from lf_train.plan import LF_SECTIONS

    return {"train": (*LF_SECTIONS, GeneratingArguments), "chat/api": serve_sections(),
            "export": EXPORT_SECTIONS, "eval": (EvalArguments,)}


def _docstrings(section: type) -> dict[str, str]:
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(section)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())  # type: ignore[union-attr]
    return docs


def rows() -> list[tuple[str, str, str, str]]:
    from lf_data.config import section_keys
    from lf_data.llamafactory_keys import KEYS
    from lf_train.plan import hf_training_fields

    readers: dict[str, list[str]] = {}
    docs: dict[str, str] = {}
    for command, sections in command_sections().items():
        for section in sections:
            for key in section_keys(section):
                if command not in readers.setdefault(key, []):
                    readers[key].append(command)
            for key, doc in _docstrings(section).items():
                docs.setdefault(key, doc)
    hf = hf_training_fields()
    table = []
    for key, entry in KEYS.items():
        if entry.kind == "renamed":
            status, note = f"renamed to {'not ' if entry.inverted else ''}`{entry.lf_key}`", entry.note
        elif entry.kind == "ignored":
            status, note = "accepted, no effect", entry.note
        elif entry.kind == "default_only":
            status, note = f"only `{entry.default!r}`", entry.note
        elif key in readers:
            status, note = "lf " + ", lf ".join(readers[key]), docs.get(key, "")
        elif key in hf:
            status, note = "lf train (transformers)", "passed to transformers' TrainingArguments"
        else:
            status, note = "unknown", ""
        table.append((key, entry.group, status, note.replace("|", "/")))
    return table


def render() -> str:
    return HEADER + "".join(f"| `{k}` | {g} | {s} | {n} |\n" for k, g, s, n in rows())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is stale or a key is unknown")
    args = parser.parse_args()
    text = render()
    unknown = [row[0] for row in rows() if row[2] == "unknown"]
    if args.check:
        stale = not DOC.is_file() or DOC.read_text(encoding="utf-8") != text
        if stale:
            print(f"{DOC.relative_to(REPO)} is out of date: run uv run python tools/key_table.py", file=sys.stderr)
        if unknown:
            print(f"LlamaFactory keys with no answer in LF: {', '.join(unknown)}", file=sys.stderr)
        return 1 if stale or unknown else 0
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(REPO)}: {len(rows())} keys, {len(unknown)} unknown"
          + (f" ({', '.join(unknown)})" if unknown else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
