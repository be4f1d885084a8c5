"""`lf estimate`: the arithmetic on small cases computed by hand, counts equal to what loading gives,
the activation count equal to what autograd keeps, the CLI, and bad input answered as `lf train` does."""

from __future__ import annotations

import json

import pytest

from lf_data.errors import ConfigError
from lf_train.estimate import DEVICES, _activation_bytes_per_layer, estimate, find_device

A100 = "A100 40GB"


@pytest.fixture
def config(base_config):
    """The tiny Llama (hidden 32, 2 layers, 4 heads of 8, 2 key/value heads, MLP 64), untied."""
    return {**base_config, "per_device_train_batch_size": 2, "cutoff_len": 16, "max_steps": 10}


def _loaded_counts(cfg: dict) -> tuple[int, int]:
    """(trainable, total) of the model `lf train` would load for this config."""
    from lf_models.loader import count_parameters, load_model
    from lf_models.precision import Precision
    from lf_train.plan import check_train_config

    plan = check_train_config(cfg)
    model = load_model(plan.model, plan.finetuning, Precision(False, False), is_trainable=True)
    return count_parameters(model)


def test_full_fp32_arithmetic(config):
    """fp32 on this CPU: weights 4 bytes, gradients 4 bytes and AdamW's two states 8 bytes per parameter."""
    result = estimate({**config, "finetuning_type": "full"}, device="cpu")
    n = result.total_params
    assert result.trainable_params == n
    assert result.weights == n * 4
    assert result.gradients == n * 4
    assert result.optimizer == 2 * n * 4
    assert result.precision == "fp32"
    assert result.peak > result.weights + result.gradients + result.optimizer


def test_lora_count_equals_peft(config):
    result = estimate({**config, "lora_rank": 8, "lora_target": "all"}, device="cpu")
    trainable, total = _loaded_counts({**config, "lora_rank": 8, "lora_target": "all"})
    assert (result.trainable_params, result.total_params) == (trainable, total)
    # by hand: r x (in + out) over q 32x32, k 32x16, v 32x16, o 32x32, gate/up 32x64, down 64x32; 2 layers
    assert trainable == 2 * 8 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 3 * (32 + 64))
    assert result.optimizer == 2 * trainable * 4  # AdamW: two fp32 states per trainable parameter


@pytest.mark.parametrize("extra", [{"use_dora": True}, {"lora_target": "q_proj,v_proj", "lora_rank": 4},
                                   {"finetuning_type": "freeze", "freeze_trainable_layers": 1},
                                   {"finetuning_type": "freeze", "freeze_trainable_modules": "mlp"},
                                   {"finetuning_type": "oft", "oft_block_size": 8}])
def test_counts_equal_the_loaded_model(config, extra):
    result = estimate({**config, **extra}, device="cpu")
    assert (result.trainable_params, result.total_params) == _loaded_counts({**config, **extra})


def test_activations_equal_what_autograd_keeps():
    """The per-layer count matches the bytes autograd saves in a Llama layer: fp32, bf16 mixed (fp32
    trainable weights, autocast) and pure bf16."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lf_train.estimate import ModelFacts

    def saved(layers: int, mode: str) -> int:
        config = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=layers, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=100)
        config._attn_implementation = "sdpa"
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        if mode != "fp32":
            model = model.to(torch.bfloat16)
        if mode == "mixed":
            for param in model.parameters():
                param.data = param.data.float()
        storages = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        ids = torch.randint(0, 100, (1, 32))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "mixed"):
            model(input_ids=ids, labels=ids)
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        cast_weights = sum(p.numel() * 2 for name, p in model.named_parameters() if mode == "mixed" and p.ndim == 2
                           and "layers" in name)
        return sum(size for ptr, size in storages.items() if ptr not in weights) - cast_weights

    facts = ModelFacts(total=0, trainable=0, upcast=0, trainable_linear=0, quantized=[], projected=[], embedding_like=0,
                       small_tensors=0, embedding_trainable=0, heap_tensors=0, largest_tensor=0, largest_layer=0,
                       head_trainable=0, matmul_per_token=0, trainable_matmul_per_token=0, layers=1,
                       layers_in_backward=1, hidden=64, intermediate=160, heads=4, kv_dim=32, q_dim=64, vocab=100,
                       gated_mlp=True, tied_embeddings=False, vision_params=0, model_type="llama")
    for mode, half, upcast in (("fp32", 4, False), ("mixed", 2, True), ("pure", 2, False)):
        per_layer_token = (saved(2, mode) - saved(1, mode)) / 32
        assert per_layer_token == _activation_bytes_per_layer(facts, half, upcast, norm_trainable=True, eager_seq=0)


def test_zero3_divides_weights_and_zero2_gradients(config, tmp_path):
    """ZeRO-3 over 4 devices: a quarter of every state plus the gathered layers; DeepSpeed in bf16 keeps
    2-byte weights and gradients and an fp32 master copy in the optimizer (12 bytes per parameter)."""
    full = {**config, "finetuning_type": "full", "bf16": True}
    single = estimate(full, device=A100, gpus=1)
    n = single.total_params
    for stage in (2, 3):
        path = tmp_path / f"z{stage}.json"
        path.write_text(json.dumps({"zero_optimization": {"stage": stage}, "bf16": {"enabled": "auto"}}))
        sharded = estimate({**full, "deepspeed": str(path)}, device=A100, gpus=4)
        assert sharded.optimizer == 12 * n / 4
        assert sharded.gradients == 2 * n / 4
        largest_layer = sharded.facts.largest_layer
        assert sharded.weights == (2 * n / 4 + 2 * largest_layer * 2 if stage == 3 else 2 * n)
    offload = tmp_path / "offload.json"
    offload.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                                         "offload_param": {"device": "cpu"}}}))
    offloaded = estimate({**full, "deepspeed": str(offload)}, device=A100, gpus=4)
    assert offloaded.optimizer == 0 and offloaded.host == 12 * n + 2 * n
    assert "DeepSpeed ZeRO-3" in offloaded.method


def test_qlora_4bit_weight_bytes(config):
    """4-bit NF4 with double quantisation: half a byte per quantised weight, one byte of absmax per block
    of 64 and an fp32 constant per 256 blocks; the rest in bf16, the adapters in fp32 (plus autocast's
    bf16 copy of them)."""
    result = estimate({**config, "quantization_bit": 4}, device=A100)
    quantized = 2 * (32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64)  # every linear layer but the head
    lora = result.trainable_params
    rest = result.total_params - quantized - lora
    assert result.weights == quantized * (0.5 + (1 + 4 / 256) / 64) + rest * 2 + lora * 4 + lora * 2
    assert result.method == "sft 4-bit bnb + LoRA r8"


def test_optimizers_and_precision(config):
    full = {**config, "finetuning_type": "full"}
    n = estimate(full, device="cpu").total_params
    eight_bit = estimate({**full, "optim": "adamw_bnb_8bit"}, device="cpu")
    embeddings = eight_bit.facts.embedding_trainable
    small = eight_bit.facts.small_tensors
    big = n - embeddings - small
    assert eight_bit.optimizer == pytest.approx(2 * (big + big * 4 / 256) + 2 * (embeddings + small) * 4)
    pure = estimate({**full, "pure_bf16": True}, device=A100)
    assert (pure.weights, pure.gradients, pure.optimizer) == (2 * n, 2 * n, 4 * n)
    mixed = estimate({**full, "bf16": True}, device=A100)  # fp32 weights plus autocast's bf16 copy of the linear ones
    assert mixed.weights == 4 * n + 2 * mixed.facts.trainable_linear and mixed.precision == "bf16 mixed precision"
    assert estimate(full, device="V100").precision == "fp16 mixed precision"
    mini = estimate({**full, "use_adam_mini": True}, device="cpu")
    assert mini.optimizer == (n + mini.facts.embedding_like) * 4
    galore = estimate({**full, "use_galore": True, "galore_rank": 4, "galore_layerwise": True}, device="cpu")
    shapes = [(32, 32), (16, 32), (16, 32), (32, 32), (64, 32), (64, 32), (32, 64)] * 2  # (out, in) per layer
    projected = sum(m * k for m, k in shapes)
    low_rank = sum(2 * 4 * max(m, k) * 4 + 4 * min(m, k) * 4 for m, k in shapes)  # two states and the projection
    assert galore.optimizer == low_rank + 2 * (n - projected) * 4
    assert galore.gradients == galore.facts.largest_tensor * 4  # layer-wise: one gradient at a time
    badam = estimate({**full, "use_badam": True}, device="cpu")
    assert badam.trainable_params == badam.facts.largest_layer and badam.optimizer == 2 * badam.trainable_params * 4
    assert badam.facts.head_trainable == badam.facts.embedding_trainable == 0  # BAdam trains decoder layers only


def test_tied_embedding_gradients_meet_at_the_end_of_backward_on_cpu(config):
    """On a CPU the embedding lookup's gradient and the tied head's add up at the end of the backward
    pass: two more vocabulary x hidden fp32 tensors, where that end is the peak (full, checkpointed)."""
    import dataclasses

    from transformers import AutoConfig

    from lf_train.estimate import estimate_plan
    from lf_train.plan import check_train_config

    arch = AutoConfig.from_pretrained(config["model_name_or_path"])
    plan = check_train_config({**config, "finetuning_type": "full", "gradient_checkpointing": True,
                               "cutoff_len": 4, "per_device_train_batch_size": 1, "bf16": False, "fp16": False})
    cpu = find_device("cpu")
    as_gpu = dataclasses.replace(cpu, kind="gpu")
    for tied, extra in ((False, 0), (True, 2 * arch.vocab_size * arch.hidden_size * 4)):
        model_config = AutoConfig.for_model(**{**arch.to_dict(), "tie_word_embeddings": tied})
        on_cpu = estimate_plan(plan, cpu, 1, model_config=model_config)
        elsewhere = estimate_plan(plan, as_gpu, 1, model_config=model_config)
        assert on_cpu.peak - elsewhere.peak == extra


def test_gradient_checkpointing_and_batch(config):
    off = estimate({**config, "finetuning_type": "full", "fused_lm_head": False, "gradient_checkpointing": False},
                   device="cpu")
    on = estimate({**config, "finetuning_type": "full", "fused_lm_head": False}, device="cpu")  # LF's default
    assert on.gradient_checkpointing and not off.gradient_checkpointing
    assert on.activations == off.activations_checkpointed < off.activations == off.activations_full
    double = estimate({**config, "finetuning_type": "full", "fused_lm_head": False, "gradient_checkpointing": False,
                       "per_device_train_batch_size": 4}, device="cpu")
    assert double.activations == 2 * off.activations and double.logits == 2 * off.logits
    assert off.logits == 2 * 16 * off.facts.vocab * 12  # fp32 log-softmax, its gradient and the logits' gradient
    assert off.tokens_per_step == 32 and off.steps == 10


def test_preference_reference_model(config, more_data):
    pref = {**config, "stage": "dpo", "dataset": "pref"}
    lora = estimate(pref, device="cpu")
    full = estimate({**pref, "finetuning_type": "full"}, device="cpu")
    plain = estimate({**config, "finetuning_type": "full"}, device="cpu")
    assert full.weights == plain.weights + full.total_params * 4  # a frozen copy of the starting weights
    assert lora.sequences_per_device == 2 * config["per_device_train_batch_size"]  # chosen and rejected
    assert any("adapter switched off" in note for note in lora.notes)


def test_multimodal_vision_tower(tiny_qwen2_vl, config):
    result = estimate({**config, "model_name_or_path": str(tiny_qwen2_vl), "finetuning_type": "full",
                       "template": "qwen2_vl"}, device="cpu")
    assert result.facts.vision_params > 0
    assert result.trainable_params <= result.total_params - result.facts.vision_params  # frozen by default


def test_device_table():
    assert find_device("h100").name == "H100 80GB"
    assert find_device("a100-40gb").memory_gib == DEVICES["A100 40GB"].memory_gib
    assert find_device("cpu").kind == "cpu"
    with pytest.raises(ConfigError, match="Known devices: cpu, H100 80GB, H200, A100 80GB"):
        find_device("B200")
    with pytest.raises(ConfigError, match="matches A100 80GB, A100 40GB"):
        find_device("A100")


def test_bad_input_errors_are_lf_trains(config, tmp_path):
    from lf_train.plan import check_train_config

    with pytest.raises(ConfigError) as from_train:
        check_train_config({**config, "lora_rnak": 8})
    with pytest.raises(ConfigError) as from_estimate:
        estimate({**config, "lora_rnak": 8}, device="cpu")
    assert str(from_estimate.value) == str(from_train.value)
    empty = tmp_path / "no-config"
    empty.mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        estimate({**config, "model_name_or_path": str(empty)}, device=A100)
    with pytest.raises(ConfigError, match="does not exist"):
        estimate({**config, "model_name_or_path": str(tmp_path / "missing")}, device=A100)
    with pytest.raises(ConfigError, match="lora_target names"):
        estimate({**config, "lora_target": "nonexistent_proj"}, device=A100)


def test_cli_prints_the_table(config, write_config, capsys):
    from lf_train.commands import estimate as command

    path = write_config(**config)
    assert command.run([str(path), "--device", "H100", "finetuning_type=full", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    for expected in ("H100 80GB x 2", "trainable", "weights", "gradients", "optimizer state",
                     "activations", "(gradient checkpointing on; on:", "logits and loss", "framework overhead",
                     "peak", "tokens/s", "whole run", "10 steps"):
        assert expected in out, expected
    with pytest.raises(ConfigError, match="Known devices"):
        command.run([str(path), "--device", "TPU"])


def test_train_warns_before_loading(config, monkeypatch, caplog):
    """`lf train` logs the one-line summary and, when the estimate exceeds the device, the keys that fit."""
    import logging

    import lf_train.estimate as module
    from lf_train.commands import _announce_estimate
    from lf_train.plan import check_train_config

    small = module.Device("small GPU", 0.1, 100.0, overhead_gib=0.0)
    monkeypatch.setattr(module, "find_device", lambda name: small)
    plan = check_train_config({**config, "finetuning_type": "full", "per_device_train_batch_size": 64,
                               "cutoff_len": 256, "fused_lm_head": False})  # the whole logits: too big
    with caplog.at_level(logging.INFO, logger="lf_train"):
        _announce_estimate(plan)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("estimate: sft full") and "of 0.1 GiB per device (small GPU)" in m for m in messages)
    warning = next(m for m in messages if "exceeds" in m)
    assert "exceeds the 0.1 GiB of small GPU" in warning
    assert "per_device_train_batch_size=1 gradient_accumulation_steps=64" in warning
    assert float(warning.split("estimated peak memory ")[1].split(" GiB")[0]) > 0.1


def test_ppo_value_head_and_sampling(config, tmp_path):
    reward = tmp_path / "rm-run"
    reward.mkdir()
    (reward / "value_head.safetensors").write_bytes(b"")
    ppo = estimate({**config, "stage": "ppo", "reward_model": str(reward), "max_new_tokens": 8}, device=A100)
    lora = estimate(config, device=A100)
    assert ppo.total_params == lora.total_params + 32 + 1  # the value head: hidden -> 1, with a bias
    assert ppo.trainable_params == lora.trainable_params + 32 + 1
    assert ppo.sequence_length == 16 + 8  # the prompt and the sampled answer
    assert any("key/value cache" in note for note in ppo.notes)


def test_figures_are_the_tables_numbers(config):
    """`Estimate.figures()` (what the board words in its own language) formats the same numbers as the
    table: AdamW's state of the full tiny model is 2 x 4 bytes per parameter."""
    import dataclasses

    result = estimate({**config, "finetuning_type": "full"}, device=A100)
    f = result.figures()
    n = result.total_params
    assert result.optimizer == 2 * n * 4 and f["optimizer"] == f"{8 * n / 1024**3:.4f} GiB"
    assert f["trainable"] == f["total"] and f["percent"] == "100.00%"
    assert (f["device"], f["memory"], f["precision"]) == ("A100 40GB", "39.4 GiB", "bf16 mixed precision")
    assert (f["steps"], f["method"]) == ("10", "sft full")
    table = result.table()
    for key in ("weights", "gradients", "optimizer", "activations", "logits", "overhead", "peak"):
        assert f[key].removesuffix(" GiB") in table, key
    assert f"~{f['tokens_per_second']} tokens/s" in table and f"10 steps, {f['duration']}" in table
    unknown = dataclasses.replace(result, steps=None, seconds=None).figures()
    assert (unknown["steps"], unknown["duration"]) == ("", "")


def test_gguf_header_is_read_once_per_file_version(tmp_path, monkeypatch):
    """A GGUF header holds the whole vocabulary (seconds to parse): it is parsed once per file version, and
    each caller gets its own copy of the config."""
    import os

    import transformers
    from transformers import LlamaConfig

    from lf_models.args import ModelArguments
    from lf_train.estimate import _gguf_config, read_model_config

    parsed = []

    def parse(folder, gguf_file=None, **kwargs):
        parsed.append(gguf_file)
        return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", parse)
    _gguf_config.cache_clear()
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF one")
    args = ModelArguments(model_name_or_path=str(path))
    first = read_model_config(args)
    first.num_hidden_layers = 99  # what a caller does to its copy stays there
    assert read_model_config(args).num_hidden_layers == 2 and parsed == ["model.gguf"]
    path.write_bytes(b"GGUF two, longer")
    os.utime(path, ns=(1, 1))
    assert read_model_config(args).hidden_size == 32 and parsed == ["model.gguf", "model.gguf"]
    _gguf_config.cache_clear()


def test_fused_lm_head_logits(config):
    """The fused head holds a tile or a chunk, not the logits: TRL's Triton kernels on a GPU (one tile), torch's
    linear_cross_entropy on a CPU (1.5 chunks of rows), both by default; fused_lm_head: false keeps the logits."""
    full = {**config, "per_device_train_batch_size": 2, "cutoff_len": 16}
    on_gpu = estimate({**full, "bf16": True}, device=A100)
    tokens, vocab, hidden = 32, on_gpu.facts.vocab, on_gpu.facts.hidden
    assert on_gpu.logits == tokens * vocab * 2 + tokens * 16
    assert estimate({**full, "bf16": True, "fused_lm_head": False}, device=A100).logits == tokens * vocab * (12 + 2)
    assert estimate({**full, "fused_lm_head": False}, device="cpu").logits == tokens * vocab * 12
    assert estimate(full, device="cpu").logits == 3 * tokens * vocab * 2 + tokens * hidden * 12
    with pytest.raises(ConfigError, match="fused_lm_head chooses the loss of stages sft and pt"):
        estimate({**full, "stage": "dpo", "fused_lm_head": False}, device="cpu")
