import torch
from transformers import AutoModelForCausalLM

from lf_data.args import DataArguments
from lf_data.pipeline import build_dataset
from lf_train.collators import SupervisedCollator


def test_neat_packed_examples_give_the_logits_they_give_alone(data_dir, tiny_llama, tiny_tokenizer):
    args = dict(dataset=["identity", "chats"], dataset_dir=str(data_dir), template="chatml", cutoff_len=128)
    plain = build_dataset(DataArguments(**args), tiny_tokenizer, "sft").train_dataset
    packed = build_dataset(DataArguments(**args, neat_packing=True), tiny_tokenizer, "sft").train_dataset
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    alone = {}
    for row in plain:
        with torch.no_grad():
            alone[tuple(row["input_ids"])] = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]

    collator = SupervisedCollator(pad_token_id=tiny_tokenizer.pad_token_id, neat_packing=True)
    batch = collator(list(packed))
    assert batch["attention_mask"].shape == (len(packed), 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    checked = 0
    for b, row in enumerate(packed):
        segments = row["attention_mask"]
        for number in set(segments):
            positions = [i for i, s in enumerate(segments) if s == number]
            ids = tuple(row["input_ids"][i] for i in positions)
            torch.testing.assert_close(logits[b, positions], alone[ids], atol=1e-5, rtol=1e-4)
            checked += 1
    assert checked == len(plain) and len(packed) < len(plain)


def test_plain_padding():
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
            {"input_ids": [8], "attention_mask": [1], "labels": [8]}]
    batch = SupervisedCollator(pad_token_id=0, pad_to_multiple_of=4)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
