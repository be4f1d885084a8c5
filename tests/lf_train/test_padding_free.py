"""Padding-free batches (`padding_free`, on by default for sft/pt): the examples of a batch end to end in
one row, the `lf_sdpa` attention keeping them apart, give the padded batch's logits, loss and gradients."""

import logging

import pytest
import torch
from train_helpers import losses

from lf_data.cli import main as lf
from lf_data.errors import ConfigError
from lf_data.processors import IGNORE_INDEX
from lf_models.padding_free import NAME, padding_free_blocker, segments, use_padding_free_attention
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
    assert segments(batch["position_ids"]) == [(0, 3, 0, 0), (3, 5, 3, 0), (8, 2, 8, 0)]
    padded = SupervisedCollator(pad_token_id=0, pad_to_multiple_of=8, padding_free=True)(ROWS)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0, 0, 0, 0, 0, 0]]
    assert padded["position_ids"].tolist()[0][10:] == [0, 1, 2, 3, 4, 5]  # the padding is an example of its own
    assert padded["labels"].tolist()[0][10:] == [-100] * 6
    assert segments(torch.tensor([[0, 1, 2, 3]])) is None


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
    assert ("pairs: each prompt computed once" in caplog.text) == (stage == "dpo")
    padded = tmp_path / "padded"
    assert lf(["train", str(write_config(**base_config)), f"output_dir={padded}", "padding_free=false"]) == 0
    ours, theirs = losses(base_config["output_dir"]), losses(padded)
    assert len(ours) == 4 and ours == pytest.approx(theirs, abs=1e-5)
    assert ours[-1] != pytest.approx(ours[0], abs=1e-3)  # it trains: the comparison is not of constants


# chosen rows first, then their rejected rows: pair 0 shares a 4-token prompt, pair 1 its prompt and the
# answer's first token (5), pair 2 nothing; right-padded with 0
PAIRS = [([3, 4, 5, 6, 9, 10, 11], [-1, -1, -1, -1, 9, 10, 11]),
         ([3, 4, 7, 12, 13], [-1, -1, -1, 12, 13]),
         ([8, 9, 14], [-1, 15, 14]),
         ([3, 4, 5, 6, 16, 17], [-1, -1, -1, -1, 16, 17]),
         ([3, 4, 7, 12, 18, 19, 20, 21], [-1, -1, -1, 12, 18, 19, 20, 21]),
         ([5, 9], [-1, 9])]


def _pair_batch() -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in PAIRS)
    pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
    return {"input_ids": torch.tensor([pad(ids, 0) for ids, _ in PAIRS]),
            "attention_mask": torch.tensor([pad([1] * len(ids), 0) for ids, _ in PAIRS]),
            "labels": torch.tensor([pad([IGNORE_INDEX if x < 0 else x for x in labels], IGNORE_INDEX)
                                    for _, labels in PAIRS])}


def test_pairs_lay_out_each_rejected_answer_as_a_branch_of_its_chosen_row():
    from lf_train.padding_free import end_to_end

    batch = _pair_batch()
    ids, positions, labels, index = end_to_end(batch["input_ids"], batch["attention_mask"], batch["labels"], pairs=True)
    # pair 0 branches at its last shared token (position 3), pair 1 at 12 (position 3), pair 2 not at all
    assert ids.tolist() == [3, 4, 5, 6, 9, 10, 11, 6, 16, 17, 3, 4, 7, 12, 13, 12, 18, 19, 20, 21, 8, 9, 14, 5, 9]
    assert positions.tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 0, 1, 2, 0, 1]
    assert labels.tolist() == [-100, -100, -100, -100, 9, 10, 11, -100, 16, 17, -100, -100, -100, 12, 13, -100,
                               18, 19, 20, 21, -100, 15, 14, -100, 9]
    assert segments(positions) == [(0, 7, 0, 0), (7, 3, 0, 3), (10, 5, 10, 0), (15, 5, 10, 3), (20, 3, 20, 0),
                                   (23, 2, 23, 0)]
    assert segments(torch.tensor([[0, 1, 2, 5, 6]])) is None  # a jump forward is no branch: one example as before
    # rejected row 3 predicts tokens 1-3 with the chosen row's outputs, then from its branch; 24 is the zero
    assert index[3].tolist() == [0, 1, 2, 7, 8, 24, 24]
    assert index[4].tolist() == [10, 11, 12, 15, 16, 17, 18]
    assert index[5].tolist() == [23, 24, 24, 24, 24, 24, 24]
    unshared = end_to_end(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert unshared[1].tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 7,
                                    0, 1]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_prompts_give_the_padded_batch_log_probabilities_and_gradients(tiny_model_factory, arch):
    """The fields TRL's preference losses read, from a padded batch, from one row, and from one row whose
    pairs share their prompts, with the gradients of a loss on them."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from lf_train.padding_free import PER_TOKEN_FIELDS, EndToEnd

    model = AutoModelForCausalLM.from_pretrained(tiny_model_factory(arch), attn_implementation="sdpa")
    add_fused_lm_head(model, outputs=PER_TOKEN_FIELDS)
    batch = _pair_batch()

    def run(forward):
        model.zero_grad()
        out = forward(**batch, fused_lm_head=True)
        (out.log_probs * torch.linspace(0.5, 1.5, out.log_probs.shape[1])).sum().backward()
        return out, [p.grad.clone() for p in model.parameters()]

    padded, padded_grads = run(model)
    use_padding_free_attention(model)
    for pairs in (False, True):
        ours, grads = run(EndToEnd(model, pairs=pairs))
        mask = batch["labels"][:, 1:] != IGNORE_INDEX
        for name in PER_TOKEN_FIELDS:
            expected, got = getattr(padded, name), getattr(ours, name)
            assert got.shape == expected.shape == mask.shape
            assert torch.allclose(got.float()[mask], expected.float()[mask], atol=1e-5), name
        assert (ours.log_probs[~mask] == 0).all()
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, padded_grads, strict=True))
