"""Tuning methods through `lf train`, the way a user runs them."""

from pathlib import Path

import pytest
import torch
from train_helpers import crash_after, losses

from lf_data.cli import main as lf
from lf_data.errors import ConfigError
from lf_train.optimizers import loraplus_optimizer
from lf_train.run import parse_train_config


def test_loraplus_gives_b_matrices_a_larger_learning_rate(tiny_llama):
    from transformers import TrainingArguments

    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model
    from lf_models.precision import choose_precision

    model = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), FinetuningArguments(), choose_precision(), True)
    optimizer = loraplus_optimizer(model, TrainingArguments(output_dir="unused", learning_rate=1e-3), ratio=16)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert lr_of[id(param)] == pytest.approx(1.6e-2 if "lora_B" in name else 1e-3), name


@pytest.mark.parametrize("method", [
    {"loraplus_lr_ratio": 4, "learning_rate": 1.0e-2},
    {"use_dora": True},
    {"quantization_bit": 4},
])
def test_methods_train_through_lf_train(method, base_config, write_config, tmp_path):
    base_config.update(max_steps=12, **method)
    assert lf(["train", str(write_config(**base_config))]) == 0
    seen = losses(base_config["output_dir"])
    assert sum(seen[-3:]) / 3 < 0.6 * sum(seen[:3]) / 3, seen


def test_gradient_checkpointing_is_on_by_default_and_gives_the_same_losses(base_config, write_config, tmp_path,
                                                                          caplog):
    """Checkpointing by default, as LlamaFactory does; `gradient_checkpointing: false` and LlamaFactory's
    `disable_gradient_checkpointing: true` turn it off; the losses are the same either way."""
    base_config.update(max_steps=4)
    runs = {"default": [], "off": ["gradient_checkpointing=false"], "disabled": ["disable_gradient_checkpointing=true"],
            "new name": ["activation_checkpointing=false"]}
    for name, overrides in runs.items():
        caplog.clear()
        with caplog.at_level("INFO", logger="lf_train.run"):
            assert lf(["train", str(write_config(**base_config)), f"output_dir={tmp_path / name}", *overrides]) == 0
        assert f"gradient checkpointing: {'on' if name == 'default' else 'off'}" in caplog.text, name
    for name in ("off", "disabled", "new name"):
        assert losses(tmp_path / name) == pytest.approx(losses(tmp_path / "default"), rel=1e-4)
    # transformers' own options pass through under either name, with LF's non-reentrant checkpoint
    every_other = parse_train_config({**base_config, "gradient_checkpointing_kwargs": {"every_n_layers": 2}})
    assert every_other.training_args.activation_checkpointing_kwargs == {"every_n_layers": 2, "use_reentrant": False}
    with pytest.raises(ConfigError, match="contradict"):
        parse_train_config({**base_config, "disable_gradient_checkpointing": True, "activation_checkpointing": True})


def test_freeze_tuning_saves_a_full_model_with_only_the_last_layer_changed(base_config, write_config, tiny_llama):
    from transformers import AutoModelForCausalLM

    base_config.update(finetuning_type="freeze", freeze_trainable_layers=1, max_steps=3, learning_rate=1e-3)
    assert lf(["train", str(write_config(**base_config))]) == 0
    tuned = AutoModelForCausalLM.from_pretrained(base_config["output_dir"]).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    changed = {n for n in base if not torch.equal(base[n], tuned[n])}
    assert changed and all(".layers.1." in n for n in changed)


def test_pissa_convert_saves_an_adapter_for_the_original_base(base_config, write_config, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model
    from lf_models.precision import choose_precision

    base_config.update(pissa_init=True, pissa_iter=-1, pissa_convert=True, max_steps=3, learning_rate=1e-2,
                       save_steps=3)
    assert lf(["train", str(write_config(**base_config))]) == 0
    out = Path(base_config["output_dir"])
    # the trained model as training saw it: PiSSA's residual base plus the PiSSA-form adapter
    trained = load_model(ModelArguments(model_name_or_path=str(tiny_llama),
                                        adapter_name_or_path=[str(out / "checkpoint-3")]),
                         FinetuningArguments(), choose_precision(), is_trainable=True)
    converted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out)  # plain peft
    ids = torch.randint(3, 300, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
        torch.testing.assert_close(converted(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-3)
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama)(input_ids=ids).logits
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter did change the model


def optimizer_state_bytes(model, training_args) -> int:
    """Bytes of optimizer state after one step with the optimizer `training_args` selects."""
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    optimizer = cls([p for p in model.parameters() if p.requires_grad], **kwargs) \
        if "galore" not in training_args.optim else None
    if optimizer is None:  # GaLore puts the targeted weights in their own group
        targets = [p for n, p in model.named_parameters() if any(t in n for t in training_args.optim_target_modules)]
        others = [p for p in model.parameters() if all(p is not t for t in targets)]
        rank = int(training_args.optim_args.split("rank=")[1].split(",")[0])
        optimizer = cls([{"params": others}, {"params": targets, "rank": rank, "update_proj_gap": 200,
                                               "scale": 2.0, "proj_type": "std"}], lr=1e-3)
    batch = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if torch.is_tensor(t))


def test_galore_and_8bit_adam_keep_optimizer_state_smaller_than_adamw(tiny_llama):
    from transformers import AutoModelForCausalLM, TrainingArguments

    def fresh():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_pretrained(tiny_llama)

    adamw = optimizer_state_bytes(fresh(), TrainingArguments(output_dir="unused", optim="adamw_torch"))
    names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    galore = optimizer_state_bytes(fresh(), TrainingArguments(output_dir="unused", optim="galore_adamw",
                                                              optim_target_modules=names,
                                                              optim_args="rank=4,update_proj_gap=200,scale=2"))
    adam8 = optimizer_state_bytes(fresh(), TrainingArguments(output_dir="unused", optim="adamw_bnb_8bit"))
    assert galore < 0.8 * adamw, (galore, adamw)
    # 8-bit states for every tensor of 4096+ elements; the tiny model has many smaller ones kept in fp32
    assert adam8 < 0.7 * adamw, (adam8, adamw)


@pytest.mark.parametrize("method", [{"use_galore": True, "galore_rank": 4, "finetuning_type": "full"},
                                    {"optim": "adamw_bnb_8bit"}])
def test_memory_saving_optimizers_train_through_lf_train(method, base_config, write_config):
    base_config.update(max_steps=12, learning_rate=1e-2, **method)
    if method.get("finetuning_type") == "full":
        base_config["learning_rate"] = 3e-3
    assert lf(["train", str(write_config(**base_config))]) == 0
    seen = losses(base_config["output_dir"])
    assert sum(seen[-3:]) / 3 < 0.7 * sum(seen[:3]) / 3, seen


def test_galore_projection_keeps_only_its_rank(monkeypatch):
    from galore_torch.galore_projector import GaLoreProjector

    from lf_train.optimizers import compact_galore_projections

    current = GaLoreProjector.get_orthogonal_matrix
    monkeypatch.setattr(GaLoreProjector, "get_orthogonal_matrix", getattr(current, "_lf_original", current))
    grad = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    plain = {kind: GaLoreProjector(rank=4, proj_type=kind) for kind in ("std", "reverse_std", "full")}
    for projector in plain.values():
        projector.project(grad, 0)
    assert plain["std"].ortho_matrix.untyped_storage().nbytes() == 48 * 48 * 4  # galore-torch keeps all of U
    compact_galore_projections()
    compact_galore_projections()  # installed once
    for kind, before in plain.items():
        after = GaLoreProjector(rank=4, proj_type=kind)
        projected = after.project(grad, 0)
        expected = before.ortho_matrix if kind != "full" else before.ortho_matrix[0]
        got = after.ortho_matrix if kind != "full" else after.ortho_matrix[0]
        assert torch.equal(got, expected)  # the same numbers; products differ in the last bits (memory layout)
        torch.testing.assert_close(projected, before.project(grad, 1), rtol=1e-5, atol=1e-5)
        assert got.untyped_storage().nbytes() == got.numel() * 4 and got.numel() in (4 * 48, 4 * 96)


def test_galore_refuses_lora(base_config, write_config, capsys):
    base_config.update(use_galore=True)
    assert lf(["train", str(write_config(**base_config))]) == 1
    assert "use_galore projects the gradients of full weights" in capsys.readouterr().err


def badam_state_bytes(model, mode: str) -> int:
    from transformers import TrainingArguments

    from lf_train.args import TrainArguments
    from lf_train.optimizers import badam_optimizer

    optimizer = badam_optimizer(model, TrainingArguments(output_dir="unused", learning_rate=1e-3),
                                TrainArguments(use_badam=True, badam_mode=mode, badam_update_ratio=0.1))
    batch = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    states = optimizer.base_optimizer.state if mode == "layer" else optimizer.state
    return sum(t.numel() * t.element_size() if not t.is_sparse else t._values().numel() * t.element_size()
               for state in states.values() for t in state.values() if torch.is_tensor(t) and t.dim() > 0)


def test_badam_keeps_optimizer_state_smaller_than_adamw(tiny_llama):
    from transformers import AutoModelForCausalLM, TrainingArguments

    def fresh():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_pretrained(tiny_llama)

    adamw = optimizer_state_bytes(fresh(), TrainingArguments(output_dir="unused", optim="adamw_torch"))
    layer = badam_state_bytes(fresh(), "layer")
    ratio = badam_state_bytes(fresh(), "ratio")
    # layer mode: Adam state for one of the two decoder layers only (embeddings and head stay frozen)
    assert 0 < layer < 0.3 * adamw, (layer, adamw)
    assert 0 < ratio < 0.3 * adamw, (ratio, adamw)


@pytest.mark.parametrize("mode", ["layer", "ratio"])
def test_badam_trains_through_lf_train(mode, base_config, write_config, caplog):
    base_config.update(max_steps=16, learning_rate=1e-2, finetuning_type="full", use_badam=True, badam_mode=mode,
                       badam_switch_interval=4, badam_update_ratio=0.5)
    with caplog.at_level("INFO"):
        assert lf(["train", str(write_config(**base_config))]) == 0
    assert f"BAdam: {mode} mode, switching every 4 steps" in caplog.text
    seen = losses(base_config["output_dir"])
    assert sum(seen[-3:]) / 3 < 0.8 * sum(seen[:3]) / 3, seen


@pytest.mark.parametrize(("change", "message"), [
    ({"use_badam": True}, "use_badam trains blocks of the full weights; use finetuning_type: full"),
    ({"use_badam": True, "finetuning_type": "full", "optim": "adamw_torch"}, "use_badam chooses the optimizer itself"),
    ({"fsdp": "full_shard auto_wrap"}, "FSDP shards a model over GPUs"),
])
def test_impossible_optimizer_and_sharding_choices_are_refused(change, message, base_config, write_config, capsys):
    base_config.update(change)
    assert lf(["train", str(write_config(**base_config))]) != 0
    assert message in capsys.readouterr().err
    assert not Path(base_config["output_dir"]).exists()


def test_muon_trains_and_resumes_exactly(base_config, write_config, tmp_path):
    from safetensors.torch import load_file

    base_config.update(max_steps=12, save_steps=6, learning_rate=2e-2, finetuning_type="full", use_muon=True)
    straight = tmp_path / "straight"
    assert lf(["train", str(write_config(**base_config)), f"output_dir={straight}"]) == 0
    seen = losses(straight)
    assert sum(seen[-3:]) / 3 < 0.6 * sum(seen[:3]) / 3, seen
    state = torch.load(straight / "checkpoint-12" / "optimizer.pt", weights_only=True)
    assert set(state) == {"muon", "adamw"} and state["muon"]["state"]  # Muon's momentum is checkpointed
    crashed = crash_after(straight, 6, tmp_path / "crashed")
    assert lf(["train", str(write_config(**base_config)), f"output_dir={crashed}"]) == 0
    assert losses(crashed) == seen  # steps 7-12 after the resume, exactly
    a, b = load_file(straight / "model.safetensors"), load_file(crashed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
