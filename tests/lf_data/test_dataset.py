import json

import pytest

from lf_data.errors import DataError
from lf_data.loading import load_aligned


def aligned(names, data_dir, **kwargs):
    return load_aligned(names, str(data_dir), **kwargs).dataset


def test_alpaca_and_sharegpt_align_to_one_structure(data_dir):
    ds = aligned(["identity", "chats"], data_dir)
    assert len(ds) == 8 + 2
    assert ds[0]["_prompt"] == [{"role": "user", "content": "Who are you?"}]
    assert ds[0]["_response"] == [{"role": "assistant", "content": "I am Lumen, made by the LF team."}]
    assert ds[8]["_system"] == "Be brief."
    assert [m["role"] for m in ds[8]["_prompt"]] == ["user", "assistant", "user"]
    assert ds[8]["_response"] == [{"role": "assistant", "content": "The LF team."}]
    assert ds[9]["_system"] == "Answer in one word."  # a leading system message becomes the system prompt
    assert ds[9]["_prompt"] == [{"role": "user", "content": "Capital of France?"}]


def test_alpaca_input_and_history(tmp_path):
    rows = [{"instruction": "Translate", "input": "bonjour", "output": "hello", "history": [["Hi", "Hello!"]]}]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"t": {"file_name": "t.json", "columns": {"prompt": "instruction", "query": "input",
                                                  "response": "output", "history": "history"}}}))
    (row,) = aligned(["t"], tmp_path)
    assert row["_prompt"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "Translate\nbonjour"}]
    assert row["_response"] == [{"role": "assistant", "content": "hello"}]


def test_max_samples_limits_each_dataset(data_dir):
    assert len(aligned(["identity", "chats"], data_dir, max_samples=3)) == 3 + 2


def test_interleaving(data_dir):
    under = aligned(["identity", "chats"], data_dir, mix_strategy="interleave_under")
    assert len(under) == 4  # alternates until the 2-row dataset runs out: 2 + 2
    over = aligned(["identity", "chats"], data_dir, mix_strategy="interleave_over")
    assert len(over) == 16  # until the 8-row dataset is exhausted: 8 + 8 (chats repeated)


def test_unknown_dataset_name_suggests(data_dir):
    with pytest.raises(DataError, match=r"dataset 'identiy' is not described in .*dataset_info.json. Did you mean 'identity'\?"):
        aligned(["identiy"], data_dir)


def test_missing_file_is_named(data_dir):
    (data_dir / "identity.json").unlink()
    with pytest.raises(DataError, match=r"dataset 'identity' .* file '.*identity.json' does not exist"):
        aligned(["identity"], data_dir)


def test_missing_dataset_info(tmp_path):
    with pytest.raises(DataError, match="dataset_info.json does not exist. Set dataset_dir"):
        aligned(["x"], tmp_path)


def test_missing_column_names_file_and_columns(data_dir):
    (data_dir / "identity.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(DataError, match=r"column\(s\) \['instruction', 'output'\] not found; the file has \['question', 'answer'\]"):
        aligned(["identity"], data_dir)


def test_bad_rows_are_listed_with_file_and_row(data_dir):
    rows = [{"instruction": "ok", "input": "", "output": "fine"}, {"instruction": "q", "input": "", "output": ""},
            {"instruction": "", "input": "", "output": "x"}]
    (data_dir / "identity.json").write_text(json.dumps(rows))
    result = load_aligned(["identity"], str(data_dir))
    assert result.rows_read == 3 and result.invalid == 2 and len(result.dataset) == 1
    path = str(data_dir / "identity.json")
    assert result.errors == [f"{path}:1: empty response (column 'output')", f"{path}:2: empty prompt (column 'instruction')"]


def test_sharegpt_roles_must_alternate(data_dir):
    bad = {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}
    (data_dir / "chats.jsonl").write_text(json.dumps(bad) + "\n")
    result = load_aligned(["chats"], str(data_dir))
    assert result.errors == [f"{data_dir / 'chats.jsonl'}:0: message 1: role 'user' is out of order; user (or "
                             "observation) and assistant (or function) messages must alternate, starting with the user"]


def test_unknown_entry_key_in_dataset_info(data_dir):
    (data_dir / "dataset_info.json").write_text(json.dumps({"identity": {"file_nam": "identity.json"}}))
    with pytest.raises(DataError, match="unknown key 'file_nam'. Did you mean 'file_name'"):
        aligned(["identity"], data_dir)


def test_file_formats(tmp_path):
    import pandas as pd

    rows = [{"instruction": "q1", "input": "", "output": "a1"}, {"instruction": "q2", "input": "", "output": "a2"}]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, row in enumerate(rows):
        (folder / f"{i}.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "csv": {"file_name": "t.csv"}, "parquet": {"file_name": "t.parquet"}, "folder": {"file_name": "parts"}}))
    for name in ("csv", "parquet", "folder"):
        ds = aligned([name], tmp_path)
        assert [r[0]["content"] for r in ds["_response"]] == ["a1", "a2"], name


def test_streaming_reads_lazily(data_dir):
    ds = aligned(["identity"], data_dir, streaming=True)
    assert not hasattr(ds, "__len__")
    rows = list(ds)
    assert len(rows) == 8 and rows[0]["_response"][0]["content"] == "I am Lumen, made by the LF team."


def test_num_samples_samples_and_repeats(data_dir):
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["identity"]["num_samples"] = 20
    info["chats"]["num_samples"] = 1
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    identity = aligned(["identity"], data_dir)
    assert len(identity) == 20  # every one of the 8 rows twice, then 4 more
    questions = [p[0]["content"] for p in identity["_prompt"]]
    assert sorted(set(questions)) == sorted(r["instruction"] for r in json.loads((data_dir / "identity.json").read_text()))
    assert all(2 <= questions.count(q) <= 3 for q in set(questions))
    assert len(aligned(["chats"], data_dir)) == 1
