"""Each stage's tokenisation, checked token by token on a locally trained tokenizer."""

import json
import os

import pytest

from lf_data.args import DataArguments
from lf_data.errors import ConfigError, DataError
from lf_data.pipeline import build_dataset
from lf_data.processors import IGNORE_INDEX, truncate_pair
from lf_data.processors.packing import first_fit_decreasing
from lf_data.processors.supervised import encode_supervised
from lf_data.templates import get_template


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def trained(labels):
    return [t for t in labels if t != IGNORE_INDEX]


@pytest.fixture
def pref_dir(data_dir):
    rows = [{"instruction": "Who are you?", "input": "", "chosen": "I am Lumen.", "rejected": "I am nobody."},
            {"instruction": "Capital of France?", "input": "", "chosen": "Paris.", "rejected": "Rome."}]
    kto = [{"instruction": "Who are you?", "output": "I am Lumen.", "label": True},
           {"instruction": "Who made you?", "output": "Nobody.", "label": False},
           {"instruction": "Capital of France?", "output": "Paris.", "label": True}]
    texts = [{"text": "The quick brown fox jumps over the lazy dog."}, {"text": "Who are you?"}]
    (data_dir / "pref.json").write_text(json.dumps(rows))
    (data_dir / "kto.json").write_text(json.dumps(kto))
    (data_dir / "texts.jsonl").write_text("\n".join(json.dumps(t) for t in texts))
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["pref"] = {"file_name": "pref.json", "ranking": True}
    info["kto"] = {"file_name": "kto.json", "columns": {"kto_tag": "label"}}
    info["texts"] = {"file_name": "texts.jsonl", "columns": {"prompt": "text"}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    return data_dir


def args(data_dir, dataset, **kw):
    return DataArguments(dataset=[dataset], dataset_dir=str(data_dir), template="chatml", cutoff_len=kw.pop("cutoff_len", 128), **kw)


def test_sft_trains_every_assistant_turn_and_nothing_else(data_dir, tiny_tokenizer):
    ds = build_dataset(args(data_dir, "chats"), tiny_tokenizer, "sft").train_dataset
    row = ds[0]  # system "Be brief." + two turns
    assert tiny_tokenizer.decode(trained(row["labels"])) == "I am Lumen.<|im_end|>\nThe LF team.<|im_end|>\n"
    assert tiny_tokenizer.decode(row["input_ids"]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
        "I am Lumen.<|im_end|>\n<|im_start|>user\nWho made you?<|im_end|>\n<|im_start|>assistant\nThe LF team.<|im_end|>\n")
    masked = build_dataset(args(data_dir, "chats", mask_history=True), tiny_tokenizer, "sft").train_dataset[0]
    assert tiny_tokenizer.decode(trained(masked["labels"])) == "The LF team.<|im_end|>\n"


def test_pretraining_packs_documents_with_eos(pref_dir, tiny_tokenizer):
    tok = tiny_tokenizer
    stream = enc(tok, "The quick brown fox jumps over the lazy dog.<|im_end|>") + enc(tok, "Who are you?<|im_end|>")
    packed = build_dataset(args(pref_dir, "texts", cutoff_len=8), tok, "pt").train_dataset
    assert packed["input_ids"] == [stream[i:i + 8] for i in range(0, len(stream) // 8 * 8, 8)]
    assert packed["labels"] == packed["input_ids"]
    unpacked = build_dataset(args(pref_dir, "texts", cutoff_len=8, packing=False), tok, "pt").train_dataset
    assert unpacked["input_ids"][1] == enc(tok, "Who are you?<|im_end|>")[:8]


def test_pairwise_shares_the_prompt_and_trains_only_answers(pref_dir, tiny_tokenizer):
    tok = tiny_tokenizer
    row = build_dataset(args(pref_dir, "pref"), tok, "dpo").train_dataset[0]
    prompt = enc(tok, "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n")
    assert row["chosen_input_ids"] == prompt + enc(tok, "I am Lumen.<|im_end|>\n")
    assert row["rejected_input_ids"] == prompt + enc(tok, "I am nobody.<|im_end|>\n")
    assert row["chosen_labels"] == [IGNORE_INDEX] * len(prompt) + enc(tok, "I am Lumen.<|im_end|>\n")
    assert trained(row["rejected_labels"]) == enc(tok, "I am nobody.<|im_end|>\n")


def test_kto_pairs_each_prompt_with_a_mismatched_answer(pref_dir, tiny_tokenizer):
    tok = tiny_tokenizer
    ds = build_dataset(args(pref_dir, "kto"), tok, "kto").train_dataset
    assert ds["kto_tags"] == [True, False, True]
    assert trained(ds[0]["labels"]) == enc(tok, "I am Lumen.<|im_end|>\n")
    assert trained(ds[0]["kl_labels"]) == enc(tok, "Nobody.<|im_end|>\n")  # the next row's answer
    assert trained(ds[2]["kl_labels"]) == enc(tok, "I am Lumen.<|im_end|>\n")  # wraps around
    assert ds[0]["kl_input_ids"][:5] == ds[0]["input_ids"][:5]


def test_ppo_prompts_end_with_the_generation_prompt(data_dir, tiny_tokenizer):
    tok = tiny_tokenizer
    row = build_dataset(args(data_dir, "identity"), tok, "ppo").train_dataset[0]
    assert tok.decode(row["input_ids"]) == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    assert row["labels"] == enc(tok, "I am Lumen, made by the LF team.<|im_end|>\n")


def test_neat_packing_keeps_examples_apart(data_dir, tiny_tokenizer):
    plain = build_dataset(args(data_dir, "identity"), tiny_tokenizer, "sft").train_dataset
    packed = build_dataset(args(data_dir, "identity", neat_packing=True), tiny_tokenizer, "sft").train_dataset
    assert len(packed) < len(plain)
    assert sum(len(r) for r in packed["input_ids"]) == sum(len(r) for r in plain["input_ids"])
    for row in packed:
        assert len(row["input_ids"]) <= 128
        segments = sorted(set(row["attention_mask"]))
        assert segments == list(range(1, len(segments) + 1))
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert len(starts) == len(segments)  # positions restart for each packed example
    assert sorted(map(sorted, [r for r in plain["labels"]])) == sorted(
        map(sorted, [row["labels"][s:e] for row in packed for s, e in _spans(row["attention_mask"])]))


def _spans(mask):
    spans, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            spans.append((start, i))
            start = i
    return spans


def test_first_fit_decreasing():
    bins = first_fit_decreasing([5, 3, 4, 2, 6], capacity=8)
    assert sorted(sorted(b) for b in bins) == [[0, 1], [2], [3, 4]]  # 6+2, 5+3, 4


def test_stage_and_data_must_fit(pref_dir, tiny_tokenizer):
    with pytest.raises(ConfigError, match="stage dpo needs preference data"):
        build_dataset(args(pref_dir, "identity"), tiny_tokenizer, "dpo")
    with pytest.raises(ConfigError, match="is preference data"):
        build_dataset(args(pref_dir, "pref"), tiny_tokenizer, "sft")
    with pytest.raises(ConfigError, match="stage kto needs a desirable/undesirable tag"):
        build_dataset(args(pref_dir, "identity"), tiny_tokenizer, "kto")
    with pytest.raises(ConfigError, match="packing works for the pt and sft stages"):
        build_dataset(args(pref_dir, "pref", packing=True), tiny_tokenizer, "dpo")


def test_invalid_rows_are_refused_or_skipped(data_dir, tiny_tokenizer):
    rows = json.loads((data_dir / "identity.json").read_text())
    rows[2]["output"] = ""
    rows[5]["instruction"] = ""
    (data_dir / "identity.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"(?s)2 invalid row\(s\) in identity:.*identity.json:2: empty response.*"
                                        r"identity.json:5: empty prompt.*skip_invalid: true"):
        build_dataset(args(data_dir, "identity"), tiny_tokenizer, "sft")
    module = build_dataset(args(data_dir, "identity", skip_invalid=True), tiny_tokenizer, "sft")
    assert len(module.train_dataset) == 6
    assert module.report.rows_read == 8 and module.report.invalid == 2


def test_rows_cut_to_nothing_are_dropped_and_counted(data_dir, tiny_tokenizer):
    module = build_dataset(args(data_dir, "chats", cutoff_len=3, train_on_prompt=False), tiny_tokenizer, "sft")
    assert module.report.dropped == 0  # truncation always keeps part of the answer
    assert all(len(r) == 3 and trained(r) for r in module.train_dataset["labels"])


def test_media_placeholders_must_match(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "<image>What is this?"},
                          {"role": "assistant", "content": "A cat."}], "images": ["cat.png", "dog.png"]}]
    for name in ("cat.png", "dog.png"):  # media must exist under media_dir
        (tmp_path / name).write_bytes(b"png")
    (tmp_path / "vl.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"vl": {"file_name": "vl.json", "formatting": "openai", "columns": {"messages": "messages", "images": "images"}}}))
    from lf_data.loading import load_aligned

    result = load_aligned(["vl"], str(tmp_path))
    assert result.errors == [f"{tmp_path / 'vl.json'}:0: 2 images given but the text has 1 <image> placeholder(s); "
                             "they must match"]
    rows[0]["images"] = ["cat.png"]
    (tmp_path / "vl.json").write_text(json.dumps(rows))
    (row,) = load_aligned(["vl"], str(tmp_path)).dataset
    assert row["_images"] == [str(tmp_path / "cat.png")]


def test_val_size_and_eval_dataset(data_dir, tiny_tokenizer):
    module = build_dataset(args(data_dir, "identity", val_size=0.25), tiny_tokenizer, "sft")
    assert len(module.train_dataset) == 6 and len(module.eval_dataset) == 2
    module = build_dataset(DataArguments(dataset=["identity"], eval_dataset=["chats"], dataset_dir=str(data_dir),
                                         template="chatml"), tiny_tokenizer, "sft")
    assert len(module.train_dataset) == 8 and len(module.eval_dataset) == 2


def test_mask_history_and_train_on_prompt():
    pairs = [([1, 2], [3, 4]), ([5], [6, 7])]
    assert encode_supervised(pairs, 100) == ([1, 2, 3, 4, 5, 6, 7], [-100, -100, 3, 4, -100, 6, 7])
    assert encode_supervised(pairs, 100, mask_history=True)[1] == [-100, -100, -100, -100, -100, 6, 7]
    assert encode_supervised(pairs, 100, train_on_prompt=True)[1] == [1, 2, 3, 4, 5, 6, 7]


def test_truncation_keeps_the_response_and_respects_cutoff():
    assert truncate_pair(10, 3, 8) == (5, 3)  # a short response is kept whole
    assert truncate_pair(3, 10, 8) == (3, 5)
    assert truncate_pair(30, 30, 10) == (5, 5)
    ids, labels = encode_supervised([(list(range(30)), list(range(100, 130)))] * 2, cutoff_len=10)
    assert len(ids) == len(labels) == 10
    assert labels == [-100] * 5 + list(range(100, 105))


def test_media_placeholder_cut_by_cutoff_len_is_dropped(tmp_path, tiny_tokenizer):
    long_question = "Who are you? " * 30
    rows = [{"messages": [{"role": "user", "content": "<image>What is this?"},
                          {"role": "assistant", "content": "A cat."}], "images": ["cat.png"]},
            {"messages": [{"role": "user", "content": long_question + "<image>"},
                          {"role": "assistant", "content": "A dog."}], "images": ["dog.png"]}]
    for name in ("cat.png", "dog.png"):  # media must exist under media_dir
        (tmp_path / name).write_bytes(b"png")
    (tmp_path / "vl.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"vl": {"file_name": "vl.json", "formatting": "openai", "columns": {"messages": "messages", "images": "images"}}}))
    module = build_dataset(args(tmp_path, "vl", cutoff_len=48), tiny_tokenizer, "sft")
    assert len(module.train_dataset) == 1
    assert module.report.drop_reasons == {"a media placeholder was cut off by cutoff_len": 1}
    (row,) = module.train_dataset  # the media paths travel on to the model's processor
    assert json.loads(row["images"]) == [str(tmp_path / "cat.png")] and row["videos"] == ""
    # packed, a row lists its examples' items in its examples' order (longest first), for the collator
    (packed,) = build_dataset(args(tmp_path, "vl", neat_packing=True, cutoff_len=1024), tiny_tokenizer,
                              "sft").train_dataset
    assert json.loads(packed["images"]) == [str(tmp_path / "dog.png"), str(tmp_path / "cat.png")]
    assert packed["videos"] == "" and sorted(set(packed["attention_mask"])) == [1, 2]
    assert packed["position_ids"].count(0) == 2


def test_hub_entries_go_through_load_dataset(tmp_path, tiny_tokenizer):
    # `hf_hub_url` takes what datasets.load_dataset takes; a local folder exercises the same path offline
    folder = tmp_path / "hub_copy"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"instruction": "Who are you?", "output": "Lumen."}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"hub": {"hf_hub_url": str(folder), "split": "train"}}))
    (row,) = build_dataset(args(tmp_path, "hub"), tiny_tokenizer, "sft").train_dataset
    assert tiny_tokenizer.decode(trained(row["labels"])) == "Lumen.<|im_end|>\n"


TOOLS = json.dumps([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                       "parameters": {"type": "object",
                                                                      "properties": {"city": {"type": "string"}}}}}])
CONVERSATIONS = [
    ([{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Lumen."},
      {"role": "user", "content": "Who made you?"}, {"role": "assistant", "content": "The LF team."}], "Be brief.", ""),
    ([{"role": "user", "content": "Weather in Paris?"},
      {"role": "function", "content": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
      {"role": "observation", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}], "", TOOLS),
    ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"}], "", ""),
]


@pytest.mark.parametrize("name", sorted(__import__("lf_data.templates", fromlist=["TEMPLATES"]).TEMPLATES))
def test_bulk_encoding_equals_the_templates_own(name, tiny_tokenizer):
    from lf_data.processors.base import Context, encode_batch
    from lf_data.templates import get_template

    template = get_template(name)
    ctx = Context(template=template, tokenizer=tiny_tokenizer, cutoff_len=1024)
    expected = [template.encode_pairs(tiny_tokenizer, m, s, t or None) for m, s, t in CONVERSATIONS]
    assert encode_batch(ctx, CONVERSATIONS) == expected


def test_mask_history_keeps_the_trained_last_turn_when_history_is_long():
    pairs = [(list(range(10)), list(range(10, 20))), (list(range(20, 30)), list(range(30, 40))), ([40, 41], [42, 43])]
    ids, labels = encode_supervised(pairs, cutoff_len=8, mask_history=True)
    assert ids[-4:] == [40, 41, 42, 43] and trained(labels) == [42, 43] and len(ids) == 8


def test_kto_never_pairs_a_row_with_its_own_answer(tmp_path, tiny_tokenizer):
    (tmp_path / "k.json").write_text(json.dumps([{"instruction": "q", "output": "a", "label": True},
                                                 {"instruction": "q2", "output": "b", "label": False}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"k": {"file_name": "k.json", "columns": {"kto_tag": "label"}}}))
    from lf_data.processors.base import Context
    from lf_data.stages import DATA_STAGES

    batch = {"_prompt": [[{"role": "user", "content": "q"}]], "_response": [[{"role": "assistant", "content": "a"}]],
             "_system": [""], "_tools": [""], "_kto_tag": [True]}
    out = DATA_STAGES["kto"].processor.tokenize(batch, Context(get_template("chatml"), tiny_tokenizer, 64))
    assert out["input_ids"] == [[]]  # alone in its batch: dropped, not paired with itself
    module = build_dataset(args(tmp_path, "k"), tiny_tokenizer, "kto")
    assert len(module.train_dataset) == 2


def test_the_garbage_collector_pauses_while_tokenising_and_comes_back(data_dir, tiny_tokenizer, monkeypatch):
    import gc

    import lf_data.pipeline

    seen = []
    tokenize = lf_data.pipeline._tokenize
    monkeypatch.setattr(lf_data.pipeline, "_tokenize", lambda *a, **k: seen.append(gc.isenabled()) or tokenize(*a, **k))
    args = DataArguments(dataset=["identity"], dataset_dir=str(data_dir), template="chatml", overwrite_cache=True)
    build_dataset(args, tiny_tokenizer, "sft")
    assert seen == [False] and gc.isenabled()
    gc.disable()  # a caller that turned it off keeps it off
    try:
        build_dataset(args, tiny_tokenizer, "sft")
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ConfigError):  # and an error on the way out turns it back on
        build_dataset(DataArguments(dataset=["identity"], dataset_dir=str(data_dir), template="chatml", val_size=100),
                      tiny_tokenizer, "sft")
    assert gc.isenabled()


def test_the_tokenizer_threads_run_only_while_this_process_tokenises(data_dir, tiny_tokenizer, monkeypatch):
    import datasets.fingerprint

    import lf_data.pipeline
    from lf_data import tokenizer_threads

    seen = []
    tokenize = lf_data.pipeline._tokenize
    monkeypatch.setattr(lf_data.pipeline, "_tokenize",
                        lambda *a, **k: seen.append(os.environ.get("TOKENIZERS_PARALLELISM")) or tokenize(*a, **k))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(tokenizer_threads, "_set_by_lf", False)
    monkeypatch.setattr(datasets.fingerprint, "_CACHING_ENABLED", False)  # tokenise again on every build

    def build(**options):
        seen.clear()
        args = DataArguments(dataset=["identity"], dataset_dir=str(data_dir), template="chatml", overwrite_cache=True,
                             **options)
        return build_dataset(args, tiny_tokenizer, "sft").train_dataset

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # the user's choice stands
    serial = build()
    assert seen == ["false"]
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    threaded = build()
    assert set(seen) == {"true"} and "TOKENIZERS_PARALLELISM" not in os.environ  # put back as it was
    assert threaded["input_ids"] == serial["input_ids"] and threaded["labels"] == serial["labels"]
    tokenizer_threads.quiet_default()  # the CLI's start-up: off for forks, but not the user's choice
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false" and tokenizer_threads.user_choice() is None
    build()
    assert set(seen) == {"true"} and os.environ["TOKENIZERS_PARALLELISM"] == "false"
    load = lf_data.pipeline.load_aligned
    monkeypatch.setattr(lf_data.pipeline, "load_aligned",
                        lambda *a, **k: seen.append(os.environ["TOKENIZERS_PARALLELISM"]) or load(*a, **k))
    build(preprocessing_num_workers=2)  # datasets' own pool of processes tokenises: threads stay off here
    assert seen == ["false"] and os.environ["TOKENIZERS_PARALLELISM"] == "false"
    with tokenizer_threads.batch_threads(streaming=True) as on:  # tokenised later, in the training loop
        assert not on
    monkeypatch.setenv("LOCAL_RANK", "1")  # a torchrun worker that is not its node's first
    with tokenizer_threads.batch_threads() as on:
        assert not on
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setattr(tokenizer_threads, "_set_by_lf", False)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")  # a library caller, nothing set
    with tokenizer_threads.batch_threads() as outer:
        with tokenizer_threads.batch_threads() as inner:  # nested (or a second board thread): still on
            assert outer and inner and tokenizer_threads.user_choice() is None  # "true" is not the user's
            assert "TOKENIZERS_PARALLELISM" not in tokenizer_threads.for_child(dict(os.environ))
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"  # until the last build ends
    assert "TOKENIZERS_PARALLELISM" not in os.environ
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    with tokenizer_threads.batch_threads() as on:
        assert not on
