"""LlamaFactory's optimisers, sft losses and Mixture-of-Depths through LF: APOLLO, Adam-mini, DFT /
ASFT / EAFT and mixture_of_depths, with LlamaFactory's key names."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from train_helpers import LOSS_TOLERANCE, losses

from lf_data.cli import main as lf
from lf_train.losses import asft_loss, dft_loss, eaft_loss

# two sequences of 4 positions over a vocabulary of 5; -100 marks positions without a label
LOGITS = torch.tensor([[[2.0, 0.5, -1.0, 0.0, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5], [3.0, -2.0, 0.0, 1.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0, 0.0]],
                       [[1.0, 1.0, -1.0, 2.0, 0.0], [-1.0, 4.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 2.5, 0.5],
                        [1.0, 2.0, 3.0, 4.0, 5.0]]])
REFERENCE = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0]],
                          [[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0]]])
LABELS = torch.tensor([[-100, 3, 0, -100], [-100, 1, 3, 2]])
# the (position, target) pairs the shifted loss sees: position t predicts label t+1
PAIRS = [(0, 0, 3), (0, 1, 0), (1, 0, 1), (1, 1, 3), (1, 2, 2)]


def _log_softmax(row: torch.Tensor) -> torch.Tensor:
    return row - torch.log(torch.exp(row).sum())


def test_dft_loss_is_the_probability_weighted_cross_entropy():
    terms = []
    for b, t, y in PAIRS:
        logp = _log_softmax(LOGITS[b, t])[y]
        terms.append(-torch.exp(logp) * logp)
    expected = torch.stack(terms)
    assert dft_loss(LOGITS, LABELS).item() == pytest.approx(expected.mean().item(), abs=1e-6)
    # gradient accumulation: the sum over this micro-batch divided by the step's label tokens
    assert dft_loss(LOGITS, LABELS, torch.tensor(8)).item() == pytest.approx(expected.sum().item() / 8, abs=1e-6)


def test_dft_weight_is_detached():
    logits = LOGITS.clone().requires_grad_(True)
    dft_loss(logits, LABELS, 1).backward()
    b, t, y = PAIRS[0]
    p = torch.softmax(LOGITS[b, t], -1)
    # d/dz of -sg(p_y) log p_y  =  p_y * (softmax(z) - onehot(y))
    expected = p[y] * (p - F.one_hot(torch.tensor(y), 5).float())
    torch.testing.assert_close(logits.grad[b, t], expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_eaft_loss_weights_by_normalised_entropy(alpha):
    terms = []
    for b, t, y in PAIRS:
        p = torch.softmax(LOGITS[b, t], -1)  # the vocabulary (5) is below K=20: top-K is all of it
        entropy = -(p * torch.log(p)).sum()
        weight = (entropy / math.log(5)) ** alpha
        terms.append(-weight * torch.log(p[y]))
    expected = torch.stack(terms).mean()
    assert eaft_loss(LOGITS, LABELS, alpha=alpha).item() == pytest.approx(expected.item(), abs=1e-6)


def test_eaft_entropy_uses_the_top_20_tokens():
    logits = torch.arange(30, dtype=torch.float32).reshape(1, 1, 30) / 10
    logits = torch.cat([logits, logits], dim=1)
    labels = torch.tensor([[-100, 29]])
    top = torch.arange(10, 30, dtype=torch.float32) / 10
    q = torch.softmax(top, -1)
    weight = -(q * torch.log(q)).sum() / math.log(20)
    expected = -weight * torch.log_softmax(logits[0, 0], -1)[29]
    assert eaft_loss(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_asft_loss_adds_the_kl_to_the_reference():
    terms = []
    for b, t, y in PAIRS:
        logp = _log_softmax(LOGITS[b, t])
        q = torch.softmax(REFERENCE[b, t], -1)
        kl = (q * (torch.log(q) - logp)).sum()
        terms.append(-torch.exp(logp[y]) * logp[y] + 0.1 * kl)
    expected = torch.stack(terms)
    assert asft_loss(LOGITS, REFERENCE, LABELS, alpha=0.1).item() == pytest.approx(expected.mean().item(), abs=1e-6)
    assert asft_loss(LOGITS, REFERENCE, LABELS, 10, alpha=0.1).item() == pytest.approx(expected.sum().item() / 10,
                                                                                        abs=1e-6)
    # against itself the anchor is zero: ASFT is DFT
    assert asft_loss(LOGITS, LOGITS, LABELS, alpha=0.1).item() == pytest.approx(dft_loss(LOGITS, LABELS).item(), abs=1e-6)


# Pinned on CPU (tiny Llama, seed 0); the plain sft run of the same config logs other numbers.
# DFT's value rises while p_t grows from ~1/vocabulary (-p log p peaks at p = 1/e); ASFT's first step
# equals DFT's (the anchor starts at the model itself, KL = 0); EAFT's weights are near 1 on an untrained model.
PINNED = {
    "use_dft_loss": [0.016899406909942627, 0.022169990465044975, 0.03748221695423126, 0.04663565382361412],
    "use_eaft_loss": [5.955082893371582, 5.70877742767334, 5.000296592712402, 4.696870803833008],
    "use_asft_loss": [0.016899406909942627, 0.02722335234284401, 0.03295392915606499, 0.03827168047428131],
}


@pytest.mark.parametrize("key", list(PINNED))
def test_sft_losses_train_through_lf_train(key, base_config, write_config):
    base_config.update(max_steps=4, learning_rate=1e-2, gradient_accumulation_steps=2, per_device_train_batch_size=2,
                       **{key: True})
    assert lf(["train", str(write_config(**base_config))]) == 0
    assert losses(base_config["output_dir"]) == pytest.approx(PINNED[key], abs=LOSS_TOLERANCE)


def test_dft_loss_is_normalised_over_the_whole_accumulated_batch(base_config, write_config, tmp_path):
    """2 micro-batches of 2 give the losses of 1 batch of 4: each micro-batch's sum is divided by the
    label tokens of all 4 rows (num_items_in_batch), not averaged per micro-batch."""
    base_config.update(max_steps=4, learning_rate=1e-2, use_dft_loss=True, per_device_train_batch_size=4,
                       output_dir=str(tmp_path / "whole"))
    assert lf(["train", str(write_config(**base_config))]) == 0
    assert losses(tmp_path / "whole") == pytest.approx(PINNED["use_dft_loss"], abs=LOSS_TOLERANCE)


@pytest.mark.parametrize(("change", "message"), [
    ({"use_dft_loss": True, "use_eaft_loss": True}, "use_dft_loss and use_eaft_loss each replace the sft loss"),
    ({"use_dft_loss": True, "stage": "pt"}, "use_dft_loss replaces the supervised fine-tuning loss; it needs stage: sft"),
    ({"use_apollo": True}, "use_apollo scales the gradients of full weights; use finetuning_type: full or freeze"),
    ({"use_apollo": True, "finetuning_type": "full", "optim": "adamw_torch"}, "use_apollo chooses the optimizer"),
    ({"use_apollo": True, "finetuning_type": "full", "apollo_layerwise": True, "gradient_accumulation_steps": 2},
     "apollo_layerwise updates during the backward pass"),
    ({"use_apollo": True, "use_galore": True, "finetuning_type": "full"}, "each choose the optimizer; pick one"),
    ({"use_adam_mini": True}, "use_adam_mini partitions full weight matrices"),
    ({"use_adam_mini": True, "use_muon": True, "finetuning_type": "full"}, "each choose the optimizer; pick one"),
    ({"mixture_of_depths": "convert"}, "mixture_of_depths adds router weights that an adapter does not save"),
    ({"mixture_of_depths": "load", "finetuning_type": "full"}, "is not a Mixture-of-Depths model"),
])
def test_method_rules_refuse_before_loading(change, message, base_config, write_config, capsys):
    base_config.update(change)
    assert lf(["train", str(write_config(**base_config)), "--check"]) != 0
    assert message in capsys.readouterr().err


def _state_numel(optimizer) -> int:
    return sum(t.numel() for state in optimizer.state.values() for t in state.values()
               if torch.is_tensor(t) and t.dim() > 0)


def _one_step(model, optimizer) -> float:
    batch = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def test_adam_mini_and_apollo_keep_less_state_than_adamw(tiny_llama):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from lf_train.args import TrainArguments
    from lf_train.optimizers import adam_mini_optimizer, apollo_optimizer

    def fresh():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_pretrained(tiny_llama)

    args = TrainingArguments(output_dir="unused", learning_rate=1e-2)
    model = fresh()
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _one_step(model, adamw)
    model = fresh()
    mini = adam_mini_optimizer(model, args)
    first = _one_step(model, mini)
    later = [_one_step(model, mini) for _ in range(5)]
    model = fresh()
    apollo = apollo_optimizer(model, args, TrainArguments(use_apollo=True, apollo_rank=2, stage="sft"))
    _one_step(model, apollo)
    assert later[-1] < first  # Adam-mini trains
    # Adam-mini: a full first moment but one second moment per head / neuron / row
    assert _state_numel(mini) < 0.6 * _state_numel(adamw), (_state_numel(mini), _state_numel(adamw))
    # APOLLO: rank-2 moments for the projected matrices (every linear layer but the head); the
    # embeddings and the head (most of this tiny model) keep AdamW's two full moments
    for name, param in model.named_parameters():
        state = sum(t.numel() for t in apollo.state[param].values() if torch.is_tensor(t) and t.dim() > 0)
        if "_proj" in name:
            assert state == 2 * 2 * max(param.shape), name  # exp_avg and exp_avg_sq: rank 2 x the long side
        else:
            assert state == 2 * param.numel(), name


def test_adam_mini_uses_the_true_head_size(tiny_llama):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from lf_train.optimizers import adam_mini_optimizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)  # hidden 32, 4 heads: head_dim 8
    optimizer = adam_mini_optimizer(model, TrainingArguments(output_dir="unused"))
    _one_step(model, optimizer)
    q = model.model.layers[0].self_attn.q_proj.weight
    assert optimizer.state[q]["vmean"].shape == (4, 1)  # one value per query head
    k = model.model.layers[0].self_attn.k_proj.weight
    assert optimizer.state[k]["vmean"].shape == (2, 1)  # two key-value heads


OPTIMIZER_PINNED = {
    "apollo": [6.252074241638184, 5.931178092956543, 5.213629245758057, 4.965739727020264, 4.465719223022461,
               4.651544570922852, 4.190072059631348, 4.356954574584961],
    "apollo_layerwise": [6.252074241638184, 5.711935043334961, 4.702448844909668, 4.331777095794678,
                         3.628126859664917, 3.464747428894043, 2.884662389755249, 2.671900749206543],
    "adam_mini": [6.252074241638184, 5.454220294952393, 4.431150913238525, 4.120996475219727, 3.5409176349639893,
                  3.4067840576171875, 3.0426952838897705, 3.009363889694214],
}


@pytest.mark.parametrize("name", list(OPTIMIZER_PINNED))
def test_optimizers_train_through_lf_train(name, base_config, write_config):
    method = {"apollo": {"use_apollo": True, "apollo_rank": 4, "apollo_scale": 1.0},
              "apollo_layerwise": {"use_apollo": True, "apollo_rank": 4, "apollo_scale": 1.0,
                                   "apollo_layerwise": True, "apollo_proj": "svd", "apollo_target": "q_proj,v_proj"},
              "adam_mini": {"use_adam_mini": True}}[name]
    base_config.update(max_steps=8, learning_rate=3e-3, finetuning_type="full", **method)
    assert lf(["train", str(write_config(**base_config))]) == 0
    seen = losses(base_config["output_dir"])
    assert seen == pytest.approx(OPTIMIZER_PINNED[name], abs=LOSS_TOLERANCE)
    assert sum(seen[-3:]) / 3 < sum(seen[:3]) / 3


def test_galore_proj_type_reaches_the_projector(base_config, write_config):
    from lf_train.plan import parse_train_config

    base_config.update(finetuning_type="full", use_galore=True, galore_proj_type="left")
    plan = parse_train_config(base_config)
    assert "proj_type=left" in plan.training_args.optim_args


def test_mixture_of_depths_routes_a_share_of_tokens(tiny_llama):
    from transformers import AutoModelForCausalLM

    from lf_train.mixture_of_depths import convert_to_mixture_of_depths

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert convert_to_mixture_of_depths(model) == [1]  # every other layer of two
    layer = model.model.layers[1]
    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(24)[None]
    with torch.no_grad():
        hidden = model.model.embed_tokens(ids)
        out = layer(hidden, attention_mask=None, position_ids=positions,
                    position_embeddings=model.model.rotary_emb(hidden, positions))
    unchanged = (out == hidden).all(-1)
    assert unchanged.sum(-1).tolist() == [21, 21]  # ceil(0.125 x 24) = 3 tokens routed, 21 skip the layer


def test_mixture_of_depths_convert_then_load(base_config, write_config, tmp_path):
    from safetensors import safe_open

    base_config.update(finetuning_type="full", mixture_of_depths="convert", max_steps=4, learning_rate=1e-3)
    assert lf(["train", str(write_config(**base_config))]) == 0
    first = Path(base_config["output_dir"])
    config = json.loads((first / "config.json").read_text())
    assert config["mixture_of_depths"] == {"capacity": 0.125, "layers": [1]}
    with safe_open(str(first / "model.safetensors"), framework="pt") as saved:
        router = saved.get_tensor("model.layers.1.mod_router.weight")
    assert router.shape == (1, 32)
    assert losses(first) == pytest.approx([6.352850437164307, 6.258544445037842, 5.900468826293945,
                                           5.7577033042907715], abs=LOSS_TOLERANCE)

    base_config.update(model_name_or_path=str(first), mixture_of_depths="load", output_dir=str(tmp_path / "second"))
    assert lf(["train", str(write_config(**base_config))]) == 0
    with safe_open(str(tmp_path / "second" / "model.safetensors"), framework="pt") as saved:
        continued = saved.get_tensor("model.layers.1.mod_router.weight")
    assert not torch.equal(continued, router)  # the loaded router kept training
    assert (continued - router).abs().max() < 0.05  # from the saved one, not from a fresh random one
    assert losses(tmp_path / "second") == pytest.approx([5.538494110107422, 5.596114635467529, 5.214939594268799,
                                                         5.05475378036499], abs=LOSS_TOLERANCE)


def test_asft_with_full_tuning_anchors_to_a_loaded_reference(base_config, write_config, tmp_path):
    """Full tuning loads a frozen copy of the starting model as the anchor. At the start KL = 0 and so is its
    gradient, so step 1 gives the same loss and the same update as DFT; step 2 then sees the same model
    and adds the KL to the (moved) anchor."""
    base_config.update(max_steps=3, learning_rate=1e-3, finetuning_type="full", use_dft_loss=True,
                       output_dir=str(tmp_path / "dft"))
    assert lf(["train", str(write_config(**base_config))]) == 0
    base_config.update(use_dft_loss=False, use_asft_loss=True, asft_alpha=1.0, output_dir=str(tmp_path / "asft"))
    assert lf(["train", str(write_config(**base_config))]) == 0
    dft, asft = losses(tmp_path / "dft"), losses(tmp_path / "asft")
    assert asft[0] == pytest.approx(dft[0], abs=1e-6)
    assert asft[1] > dft[1] + 1e-3, (asft, dft)
