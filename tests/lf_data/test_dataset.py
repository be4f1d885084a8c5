import json

import pytest

from lf_data.args import DataArguments
from lf_data.errors import DataError
from lf_data.loading import load_aligned
from lf_data.pipeline import build_supervised_dataset
from lf_data.supervised import IGNORE_INDEX


def test_alpaca_and_sharegpt_align_to_one_structure(data_dir):
    ds = load_aligned(["identity", "chats"], str(data_dir))
    assert len(ds) == 8 + 2
    assert ds[0]["_messages"] == [{"role": "user", "content": "Who are you?"},
                                  {"role": "assistant", "content": "I am Lumen, made by the LF team."}]
    assert ds[8]["_system"] == "Be brief."
    assert [m["role"] for m in ds[8]["_messages"]] == ["user", "assistant", "user", "assistant"]
    assert ds[9]["_system"] == "Answer in one word."  # a leading system message becomes the system prompt
    assert ds[9]["_messages"][0] == {"role": "user", "content": "Capital of France?"}


def test_alpaca_input_and_history(tmp_path):
    rows = [{"instruction": "Translate", "input": "bonjour", "output": "hello",
             "history": [["Hi", "Hello!"]]}]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"t": {"file_name": "t.json", "columns": {"prompt": "instruction", "query": "input",
                                                  "response": "output", "history": "history"}}}))
    (row,) = load_aligned(["t"], str(tmp_path))
    assert row["_messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                {"role": "user", "content": "Translate\nbonjour"},
                                {"role": "assistant", "content": "hello"}]


def test_max_samples_limits_each_dataset(data_dir):
    assert len(load_aligned(["identity", "chats"], str(data_dir), max_samples=3)) == 3 + 2


def test_unknown_dataset_name_suggests(data_dir):
    with pytest.raises(DataError, match=r"dataset 'identiy' is not described in .*dataset_info.json. Did you mean 'identity'\?"):
        load_aligned(["identiy"], str(data_dir))


def test_missing_file_is_named(data_dir):
    (data_dir / "identity.json").unlink()
    with pytest.raises(DataError, match=r"dataset 'identity' .* file '.*identity.json' does not exist"):
        load_aligned(["identity"], str(data_dir))


def test_missing_dataset_info(tmp_path):
    with pytest.raises(DataError, match="dataset_info.json does not exist. Set dataset_dir"):
        load_aligned(["x"], str(tmp_path))


def test_missing_column_names_file_and_columns(data_dir):
    (data_dir / "identity.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(DataError, match=r"column\(s\) \['instruction', 'output'\] not found; the file has \['question', 'answer'\]"):
        load_aligned(["identity"], str(data_dir))


def test_bad_row_is_named(data_dir):
    rows = [{"instruction": "ok", "input": "", "output": "fine"}, {"instruction": "q", "input": "", "output": ""}]
    (data_dir / "identity.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"dataset 'identity' .* row 1: empty response \(column 'output'\)"):
        load_aligned(["identity"], str(data_dir))


def test_sharegpt_roles_must_alternate(data_dir):
    bad = {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}
    (data_dir / "chats.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"row 0, message 1: role 'user' is out of order"):
        load_aligned(["chats"], str(data_dir))


def test_unknown_entry_key_in_dataset_info(data_dir):
    (data_dir / "dataset_info.json").write_text(json.dumps({"identity": {"file_nam": "identity.json"}}))
    with pytest.raises(DataError, match="unknown key 'file_nam'. Did you mean 'file_name'"):
        load_aligned(["identity"], str(data_dir))


def test_supervised_dataset_masks_everything_but_the_answer(data_dir, tiny_tokenizer):
    args = DataArguments(dataset=["identity"], dataset_dir=str(data_dir), template="chatml", cutoff_len=128)
    ds = build_supervised_dataset(args, tiny_tokenizer)
    row = ds[0]
    answer = tiny_tokenizer.encode("I am Lumen, made by the LF team.<|im_end|>\n", add_special_tokens=False)
    trained = [t for t in row["labels"] if t != IGNORE_INDEX]
    assert trained == answer
    assert row["labels"][-len(answer):] == answer == row["input_ids"][-len(answer):]
    assert all(t == IGNORE_INDEX for t in row["labels"][:-len(answer)])
    assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_examples_without_trainable_tokens_are_dropped(data_dir, tiny_tokenizer):
    args = DataArguments(dataset=["identity"], dataset_dir=str(data_dir), template="chatml", cutoff_len=4)
    ds = build_supervised_dataset(args, tiny_tokenizer)
    assert all(len(r) == 4 for r in ds["input_ids"])
    assert all(any(t != IGNORE_INDEX for t in labels) for labels in ds["labels"])
