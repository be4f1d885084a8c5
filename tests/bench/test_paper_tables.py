"""bench/paper_tables.py --smoke: both of the paper's tables in miniature on a tiny Llama, every cell filled,
with the memory accounting the root README describes."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TABLE4_COLUMNS = ("trainable_params", "peak_memory_bytes", "tokens_per_second", "perplexity_before", "perplexity_after")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("paper_tables")
    # a fresh process: the bench forks its Table 4 runs before this process's torch threads exist there
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "paper_tables.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "paper_tables.json").read_text()), (out / "paper_tables.md").read_text()


def test_table4_has_every_method_and_every_column(smoke):
    result, _ = smoke
    rows = {row["method"]: row for row in result["table4"]}
    assert list(rows) == ["full", "freeze", "galore", "lora", "qlora"]
    for method, row in rows.items():
        for column in TABLE4_COLUMNS:
            assert isinstance(row[column], (int, float)) and math.isfinite(row[column]) and row[column] > 0, (method, column)
    assert rows["freeze"]["trainable_params"] < rows["full"]["trainable_params"] == rows["galore"]["trainable_params"]
    assert rows["lora"]["trainable_params"] == rows["qlora"]["trainable_params"] < rows["freeze"]["trainable_params"]
    # the same held-out text and starting weights (LoRA starts as the identity), so the same "before";
    # QLoRA's starting point is the 4-bit base
    before = {m: rows[m]["perplexity_before"] for m in ("full", "freeze", "galore", "lora")}
    assert len(set(before.values())) == 1, before
    assert rows["qlora"]["perplexity_before"] != rows["full"]["perplexity_before"]
    assert rows["full"]["perplexity_after"] < rows["full"]["perplexity_before"]


def test_table5_has_the_base_and_every_method_scored(smoke):
    result, _ = smoke
    rows = {row["method"]: row for row in result["table5"]}
    assert list(rows) == ["base", "full", "galore", "lora", "qlora"]
    for method, row in rows.items():
        scores = [row["rouge-1"], row["rouge-2"], row["rouge-l"]]
        assert all(isinstance(s, float) and 0 <= s <= 100 for s in scores), (method, scores)
        assert row["rouge-avg"] == pytest.approx(sum(scores) / 3)
        assert row["test_rows"] == 2


def test_markdown_tables_have_no_empty_cell(smoke):
    _, text = smoke
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert len(rows) == 5 + 5
    for line in rows:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert all(cells) and "n/a" not in cells and "failed" not in cells, line


def test_the_run_records_the_memory_accounting_the_readme_describes(smoke):
    result, _ = smoke
    assert result["device"] == "cpu"
    assert result["memory_accounting"] == "peak_rss_minus_baseline"
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Reproducing the paper", 1)[1].split("\n## ", 1)[0]
    assert "`peak_rss_minus_baseline`" in section and "`cuda_max_memory_allocated`" in section
    assert result["command"][-3:] == ["--smoke", "--out", result["settings"]["out"]]
    assert result["versions"]["torch"] and result["versions"]["lf-train"]
