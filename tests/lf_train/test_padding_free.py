"""Padding-free batches (`padding_free`, on by default for sft/pt): the examples of a batch end to end in
one row, the `lf_sdpa` attention keeping them apart, give the padded batch's logits, loss and gradients."""

import logging

import pytest
import torch
from train_helpers import losses

from lf_data.cli import main as lf
from lf_data.errors import ConfigError
from lf_data.processors import IGNORE_INDEX
from lf_models.padding_free import NAME, padding_free_blocker, segment_lengths, use_padding_free_attention
from lf_train.collators import SupervisedCollator
from lf_train.run import parse_train_config

ROWS = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [IGNORE_INDEX, 6, 7]},
        {"input_ids": [8, 9, 10, 11, 12], "attention_mask": [1] * 5, "labels": [8, IGNORE_INDEX, 10, 11, 12]},
        {"input_ids": [13, 14], "attention_mask": [1, 1], "labels": [13, 14]}]


def test_collator_lays_the_examples_end_to_end():
    batch = SupervisedCollator(pad_token_id=0, padding_free=True)(ROWS)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention_mask: nothing is padding
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 4, 0, 1]]
    # each example's first label goes: it would be the previous example's last target
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, -100, 10, 11, 12, -100, 14]]
    assert segment_lengths(batch["position_ids"]) == [3, 5, 2]
    padded = SupervisedCollator(pad_token_id=0, pad_to_multiple_of=8, padding_free=True)(ROWS)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0, 0, 0, 0, 0, 0]]
    assert padded["position_ids"].tolist()[0][10:] == [0, 1, 2, 3, 4, 5]  # the padding is an example of its own
    assert padded["labels"].tolist()[0][10:] == [-100] * 6
    assert segment_lengths(torch.tensor([[0, 1, 2, 3]])) is None


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_one_row_gives_the_padded_batch_logits_loss_and_gradients(tiny_model_factory, arch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_factory(arch), attn_implementation="sdpa")
    assert padding_free_blocker(model, 64) is None
    padded = SupervisedCollator(pad_token_id=0)(ROWS)
    flat = SupervisedCollator(pad_token_id=0, padding_free=True)(ROWS)

    def run(batch):
        model.zero_grad()
        out = model(**batch)
        out.loss.backward()
        return out, [p.grad.clone() for p in model.parameters()]

    reference, reference_grads = run(padded)
    assert use_padding_free_attention(model) == NAME
    ours, grads = run(flat)
    lengths = [len(r["input_ids"]) for r in ROWS]
    expected = torch.cat([reference.logits[i, :n] for i, n in enumerate(lengths)])
    assert torch.allclose(ours.logits[0], expected, atol=1e-5)
    assert ours.loss.item() == pytest.approx(reference.loss.item(), abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, reference_grads, strict=True))
    # padded batches (evaluation, generation) still get their masks
    again = model(**padded).logits
    assert torch.allclose(again, reference.logits, atol=1e-6)


def test_sft_is_padding_free_by_default_with_the_padded_losses(base_config, write_config, tmp_path, caplog):
    base_config.update(max_steps=6, save_steps=100, dataset="identity,chats")
    with caplog.at_level(logging.INFO):
        assert lf(["train", str(write_config(**base_config))]) == 0
    assert "batches: padding-free" in caplog.text and f"attention {NAME}" in caplog.text
    caplog.clear()
    padded = tmp_path / "padded"
    with caplog.at_level(logging.INFO):
        assert lf(["train", str(write_config(**base_config)), f"output_dir={padded}", "padding_free=false"]) == 0
    assert "padding-free" not in caplog.text
    assert losses(base_config["output_dir"]) == pytest.approx(losses(padded), abs=1e-5)


def test_padding_free_is_refused_where_it_cannot_apply(base_config, more_data):
    with pytest.raises(ConfigError, match="padding_free lays out the batches of stages sft, pt, dpo and kto; stage rm"):
        parse_train_config({**base_config, "stage": "rm", "dataset": "pref", "padding_free": True})
    with pytest.raises(ConfigError, match="the rows are packed already"):
        parse_train_config({**base_config, "stage": "pt", "dataset": "texts", "padding_free": True})
    with pytest.raises(ConfigError, match="the rows are packed already"):
        parse_train_config({**base_config, "neat_packing": True, "padding_free": True})
    parse_train_config({**base_config, "stage": "pt", "dataset": "texts", "packing": False, "padding_free": True})


def test_eager_attention_pads_by_default_and_refuses_padding_free(base_config, write_config, tmp_path, caplog):
    base_config.update(max_steps=1, save_steps=100, flash_attn="disabled")
    with caplog.at_level(logging.INFO):
        assert lf(["train", str(write_config(**base_config))]) == 0
    assert "padding-free batches off: attention eager" in caplog.text
    with pytest.raises(ConfigError, match="padding_free: true, but flash_attn: disabled"):  # before any weights load
        parse_train_config({**base_config, "padding_free": True})


@pytest.mark.parametrize("stage, pref_loss", [("dpo", "sigmoid"), ("dpo", "orpo"), ("kto", "sigmoid")])
def test_preference_stages_are_padding_free_by_default_with_the_padded_losses(stage, pref_loss, base_config,
                                                                              write_config, more_data, tmp_path, caplog):
    base_config.update(stage=stage, dataset="pref" if stage == "dpo" else "kto", pref_loss=pref_loss, max_steps=4,
                       save_steps=100, per_device_train_batch_size=2, learning_rate=1e-2)
    with caplog.at_level(logging.INFO):
        assert lf(["train", str(write_config(**base_config))]) == 0
    assert f"attention {NAME}" in caplog.text
    padded = tmp_path / "padded"
    assert lf(["train", str(write_config(**base_config)), f"output_dir={padded}", "padding_free=false"]) == 0
    ours, theirs = losses(base_config["output_dir"]), losses(padded)
    assert len(ours) == 4 and ours == pytest.approx(theirs, abs=1e-5)
    assert ours[-1] != pytest.approx(ours[0], abs=1e-3)  # it trains: the comparison is not of constants
