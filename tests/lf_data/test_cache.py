"""The tokenised-dataset cache: identical inputs reuse it, any change to an input misses it."""

import json

import pytest

from lf_data.args import DataArguments
from lf_data.pipeline import build_dataset


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    monkeypatch.setenv("LF_CACHE_HOME", str(home))
    return home / "datasets"


def run(data_dir, tokenizer, **kw):
    args = DataArguments(dataset=["identity"], dataset_dir=str(data_dir), template=kw.pop("template", "chatml"),
                         cutoff_len=kw.pop("cutoff_len", 64), **kw)
    return build_dataset(args, tokenizer, "sft")


def test_second_identical_run_reuses_the_cache(data_dir, tiny_tokenizer, cache_home, caplog):
    first = run(data_dir, tiny_tokenizer)
    assert first.report.cache == "written"
    caplog.set_level("INFO", logger="lf_data")
    second = run(data_dir, tiny_tokenizer)
    assert second.report.cache == "hit" and second.report.cache_path == first.report.cache_path
    assert "reusing the tokenised dataset cached at" in caplog.text
    assert second.train_dataset["input_ids"] == first.train_dataset["input_ids"]
    assert second.report.rows_read == 8 and second.report.kept == 8
    assert [p.name for p in cache_home.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers


@pytest.mark.parametrize("change", ["options", "data", "template", "tokenizer"])
def test_any_changed_input_misses(change, data_dir, tiny_tokenizer, cache_home):
    first = run(data_dir, tiny_tokenizer)
    kwargs = {}
    tokenizer = tiny_tokenizer
    if change == "options":
        kwargs["cutoff_len"] = 32
    elif change == "data":
        rows = json.loads((data_dir / "identity.json").read_text())
        rows[0]["output"] = "I am Lumen."
        (data_dir / "identity.json").write_text(json.dumps(rows))
    elif change == "template":
        kwargs["template"] = "qwen"
    else:
        import copy

        tokenizer = copy.deepcopy(tiny_tokenizer)
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|new|>"]})
    second = run(data_dir, tokenizer, **kwargs)
    assert second.report.cache == "written"
    assert second.report.cache_path != first.report.cache_path


def test_overwrite_cache_and_tokenized_path(data_dir, tiny_tokenizer, cache_home, tmp_path):
    run(data_dir, tiny_tokenizer)
    assert run(data_dir, tiny_tokenizer, overwrite_cache=True).report.cache == "written"
    saved = tmp_path / "tokenized"
    first = run(data_dir, tiny_tokenizer, tokenized_path=str(saved))
    assert first.report.cache == "written" and (saved / "train").is_dir()
    (data_dir / "identity.json").unlink()  # the saved tokens no longer need the raw data
    again = run(data_dir, tiny_tokenizer, tokenized_path=str(saved))
    assert again.report.cache == "hit" and again.train_dataset["labels"] == first.train_dataset["labels"]


def test_tokenized_path_keeps_train_and_eval_apart_and_never_replaces_foreign_folders(data_dir, tiny_tokenizer,
                                                                                      cache_home, tmp_path):
    import pytest as _pytest

    from lf_data.errors import ConfigError

    saved = tmp_path / "tokenized"
    module = run(data_dir, tiny_tokenizer, tokenized_path=str(saved), eval_dataset=["chats"])
    again = run(data_dir, tiny_tokenizer, tokenized_path=str(saved), eval_dataset=["chats"])
    assert len(again.train_dataset) == 8 and len(again.eval_dataset) == 2
    assert again.eval_dataset["input_ids"] == module.eval_dataset["input_ids"] != again.train_dataset["input_ids"]
    foreign = tmp_path / "notes"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "mine.txt").write_text("keep me")
    with _pytest.raises(ConfigError, match="is not an LF tokenised dataset"):
        run(data_dir, tiny_tokenizer, tokenized_path=str(foreign))
    assert (foreign / "train" / "mine.txt").read_text() == "keep me"


def test_folder_files_cannot_run_together_in_the_key(tmp_path, tiny_tokenizer, cache_home):
    keys = []
    for first, second in (("ab", "c"), ("a", "bc")):
        folder = tmp_path / f"case{len(keys)}"
        (folder / "parts").mkdir(parents=True)
        (folder / "parts" / "1.txt").write_text(first)
        (folder / "parts" / "2.txt").write_text(second)
        (folder / "dataset_info.json").write_text(json.dumps({"t": {"file_name": "parts", "columns": {"prompt": "text"}}}))
        args = DataArguments(dataset=["t"], dataset_dir=str(folder), template="chatml", cutoff_len=16)
        keys.append(build_dataset(args, tiny_tokenizer, "pt").report.cache_path.rsplit("/", 1)[-1])
    assert keys[0] != keys[1]
