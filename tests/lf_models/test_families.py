"""Every registered model family, table-driven: a tiny random model of the architecture is built
from its config, saved with the locally trained tokenizer, loaded through `load_model` with
`lora_target: all`, and trained for one forward/backward step. Nothing here touches a model hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.families import FAMILIES, PEFT_FUSED_EXPERTS, family_for, model_class_for
from lf_models.loader import load_model
from lf_models.precision import choose_precision

TEXT_FAMILIES = sorted(name for name, family in FAMILIES.items() if not family.vlm)
VLM_FAMILIES = sorted(name for name, family in FAMILIES.items() if family.vlm)

# tiny shapes shared by every family: 2 layers of width 32, 4 heads of 8, 2 key/value heads
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=256, tie_word_embeddings=False,
            initializer_range=0.2, use_cache=False)
# 4 experts of width 32, 2 active, one shared expert, first layer dense where the family has the option
MOE = dict(num_experts=4, num_local_experts=4, moe_num_experts=4, n_routed_experts=4, num_experts_per_tok=2,
           moe_topk=2, moe_intermediate_size=32, shared_expert_intermediate_size=32, n_shared_experts=1,
           first_k_dense_replace=1, n_group=1, topk_group=1)
MLA = dict(num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
           v_head_dim=8)
# what a family needs beyond TINY (names its config spells differently, defaults that are not tiny)
EXTRA: dict[str, dict] = {
    "falcon": {"head_dim": None},  # derived from hidden_size / heads, read-only
    "gptj": {"rotary_dim": 4},
    "codegen": {"rotary_dim": 4},
    "gpt_neo": {"attention_types": [[["global", "local"], 1]], "window_size": 16},
    "opt": {"ffn_dim": 64, "word_embed_proj_dim": 32},
    "deepseek_v2": {**MOE, **MLA},
    "deepseek_v3": {**MOE, **MLA},
    "minicpm3": MLA,
    "qwen3_next": {**MOE, "layer_types": ["linear_attention", "full_attention"], "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8,
                   "linear_value_head_dim": 8},
    "dbrx": {"d_model": 32, "n_heads": 4, "n_layers": 2, "attn_config": {"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
             "ffn_config": {"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2}},
    **{name: MOE for name in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe", "granitemoe", "glm4_moe",
                              "ernie4_5_moe", "hunyuan_v1_moe", "llama4_text", "gpt_oss")},
}


def tiny_config(model_type: str, tokenizer, **overrides):
    from transformers import AutoConfig

    kwargs = {**TINY, **EXTRA.get(model_type, {}), **overrides}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs)


@pytest.fixture(scope="session")
def family_model(tmp_path_factory, tiny_tokenizer):
    """Folder of a tiny random model of a family, saved with the tiny tokenizer (built once a session)."""
    from transformers import AutoModelForCausalLM

    cache: dict[str, Path] = {}

    def make(model_type: str) -> Path:
        if model_type not in cache:
            path = tmp_path_factory.mktemp(f"family-{model_type}")
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(tiny_config(model_type, tiny_tokenizer)).save_pretrained(path)
            tiny_tokenizer.save_pretrained(path)
            cache[model_type] = path
        return cache[model_type]

    return make


def resolve(model: torch.nn.Module, dotted: str):
    for part in dotted.split("."):
        model = getattr(model, part)
    return model


def unwrapped(name: str) -> str:
    while name.endswith(".base_layer"):  # peft keeps the wrapped layer (or parameter holder) in `.base_layer`
        name = name.removesuffix(".base_layer")
    return name


def intended_targets(base: torch.nn.Module, family) -> set[str]:
    """Full names of the modules `lora_target: all` should adapt for this family."""
    head = base.get_output_embeddings()
    linear = {unwrapped(name) for name, module in base.named_modules()
              if (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D")
              and module is not head and ".lora_" not in name}
    if family.lora_targets:
        linear = {name for name in linear if name.split(".")[-1] in family.lora_targets}
    if PEFT_FUSED_EXPERTS in family.quirks:
        # the MLP names move to the fused routed experts (parameters gate_up_proj / down_proj)
        linear = {name for name in linear if name.split(".")[-1] not in ("gate_proj", "up_proj", "down_proj")}
        linear |= {unwrapped(name) for name, module in base.named_modules()
                   if "gate_up_proj" in dict(module.named_parameters(recurse=False))}
    return linear


def adapted_modules(base: torch.nn.Module) -> set[str]:
    return {unwrapped(name) for name, module in base.named_modules() if hasattr(module, "lora_A")}


def assert_every_adapter_trains(model) -> None:
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    missing = [n for n, p in lora.items() if p.grad is None]
    assert not missing, f"adapters without a gradient: {missing}"
    # B starts at zero, so the first step moves every B; A gets its signal once B is non-zero
    silent = [n for n, p in lora.items() if "lora_B" in n and not p.grad.abs().sum() > 0]
    assert not silent, f"lora_B with an all-zero gradient: {silent}"


@pytest.mark.parametrize("model_type", TEXT_FAMILIES)
def test_family_trains_with_lora_on_its_intended_targets(model_type, family_model):
    family = FAMILIES[model_type]
    path = family_model(model_type)
    model = load_model(ModelArguments(model_name_or_path=str(path)), FinetuningArguments(lora_target=["all"]),
                       choose_precision(), is_trainable=True)
    base = model.get_base_model()
    assert family_for(base.config) is family
    assert type(base).__name__ in family.architectures
    assert sum(p.numel() for p in base.parameters()) < 400_000, "the test model should stay tiny"

    targets = intended_targets(base, family)
    assert adapted_modules(base) == targets and len(targets) >= 2 * 3
    present = {unwrapped(name).split(".")[-1] for name, _ in base.named_modules()}
    assert not set(family.lora_targets) - present, "lora_targets names a module this family does not have"

    layers = resolve(base, family.layers)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == base.config.num_hidden_layers == 2

    torch.manual_seed(0)
    batch = torch.randint(3, len(base.get_input_embeddings().weight) - 1, (2, 12))
    loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch, use_cache=False).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert_every_adapter_trains(model)


def test_every_family_template_exists_in_lf_data():
    from lf_data.templates import TEMPLATES

    unknown = {name: f.template for name, f in FAMILIES.items() if f.template is not None and f.template not in TEMPLATES}
    assert not unknown


def test_registry_matches_the_installed_transformers():
    import transformers
    from transformers import CONFIG_MAPPING

    assert len(TEXT_FAMILIES) >= 30 and VLM_FAMILIES
    for name, family in FAMILIES.items():
        assert name in CONFIG_MAPPING, name
        assert family.architectures and all(hasattr(transformers, arch) for arch in family.architectures), name
        assert family.layers and not family.layers.startswith(".")
        assert all(isinstance(q, str) and q for q in family.quirks), name


# -- vision-language model: Qwen2-VL --------------------------------------------------------------

def test_vlm_loads_as_image_text_to_text_and_trains_on_an_image(tiny_qwen2_vl):
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = load_model(ModelArguments(model_name_or_path=str(tiny_qwen2_vl)), FinetuningArguments(lora_target=["all"]),
                       choose_precision(), is_trainable=True)
    base = model.get_base_model()
    family = family_for(base.config)
    assert family is FAMILIES["qwen2_vl"] and family.vlm and base.config.model_type == "qwen2_vl"
    assert model_class_for(base.config) is AutoModelForImageTextToText
    assert type(base).__name__ == "Qwen2VLForConditionalGeneration"

    adapted = adapted_modules(base)
    assert adapted == intended_targets(base, family) and len(adapted) == 2 * 7
    assert all(name.startswith(family.layers + ".") for name in adapted)  # vision tower and merger untouched
    layers = resolve(base, family.layers)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == base.config.text_config.num_hidden_layers

    # one training step on an image and a sentence, prepared the way Qwen2-VL's processor does it
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_vl)
    image_processor = AutoImageProcessor.from_pretrained(tiny_qwen2_vl)
    image = Image.fromarray((np.random.RandomState(0).rand(56, 56, 3) * 255).astype("uint8"))
    pixels = image_processor(images=[image], return_tensors="pt")
    n_image_tokens = int(pixels["image_grid_thw"].prod()) // image_processor.merge_size**2
    text = "<|vision_start|>" + "<|image_pad|>" * n_image_tokens + "<|vision_end|>Who are you? I am Lumen."
    inputs = tokenizer([text], return_tensors="pt")
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == image_token, -100)
    batch = {**inputs, **pixels, "mm_token_type_ids": (inputs["input_ids"] == image_token).long(), "labels": labels}

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    before = [p.detach().clone() for p in trainable]
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert_every_adapter_trains(model)
    assert all(p.grad is None for n, p in model.named_parameters() if ".visual." in n)
    optimizer.step()
    moved = [not torch.equal(a, p.detach()) for a, p in zip(before, trainable, strict=True)]
    assert any(moved)
    assert model(**batch).loss.item() != loss.item()
