import pytest
import torch

from lf_data.errors import ConfigError
from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.loader import find_all_linear_modules, load_model, load_tokenizer, resolve_model
from lf_models.precision import Precision, choose_precision

ARCHITECTURES = ["llama", "qwen2", "mistral", "gpt_neox", "phi3"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_all_reaches_every_linear_layer_and_trains(arch, tiny_model_factory):
    path = tiny_model_factory(arch)
    model_args = ModelArguments(model_name_or_path=str(path))
    model = load_model(model_args, FinetuningArguments(lora_target=["all"]), choose_precision(), is_trainable=True)
    base = model.get_base_model()
    adapted = {name for name, m in base.named_modules() if hasattr(m, "lora_A")}
    linear = {name.removesuffix(".base_layer") for name, m in base.named_modules()
              if isinstance(m, torch.nn.Linear) and ".lora_" not in name and m is not base.get_output_embeddings()}
    assert adapted == linear and len(adapted) >= 2 * 4  # two layers, at least q/k/v/o each
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())

    batch = torch.randint(3, 300, (2, 12))
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    # B starts at zero, so the first step moves every B (A gets its signal once B is non-zero)
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


def test_find_all_linear_excludes_the_head(tiny_llama):
    model = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), FinetuningArguments(finetuning_type="full"),
                       choose_precision(), is_trainable=False)
    assert find_all_linear_modules(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert not any(p.requires_grad for p in model.parameters())


def test_explicit_targets_are_checked(tiny_llama):
    args = ModelArguments(model_name_or_path=str(tiny_llama))
    model = load_model(args, FinetuningArguments(lora_target=["q_proj", "v_proj"]), choose_precision(), True)
    adapted = {n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"q_proj", "v_proj"}
    with pytest.raises(ConfigError, match=r"lora_target names \['qkv'\] that this model does not have"):
        load_model(args, FinetuningArguments(lora_target=["qkv"]), choose_precision(), True)


def test_tokenizer_gets_a_pad_token(tiny_llama):
    tok = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_llama)))
    assert tok.pad_token is not None


@pytest.mark.parametrize(("ref", "message"), [
    ("/no/such/model", "model path '/no/such/model' does not exist"),
    ("./models/missing", "does not exist"),
    ("/no/such/file.gguf", "does not exist"),
])
def test_missing_model_paths_fail_before_loading(ref, message):
    with pytest.raises(ConfigError, match=message):
        resolve_model(ModelArguments(model_name_or_path=ref))


def test_folder_without_config(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        resolve_model(ModelArguments(model_name_or_path=str(tmp_path)))


def test_hub_ids_are_kept_for_the_hub():
    source = resolve_model(ModelArguments(model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert source.path == "HuggingFaceTB/SmolLM2-135M-Instruct" and not source.local


def test_hub_load_offline_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"(?s)could not load the tokenizer of 'nobody/no-such-model'.*download the model"):
        load_tokenizer(ModelArguments(model_name_or_path="nobody/no-such-model"))


def test_model_name_is_required():
    with pytest.raises(ConfigError, match="model_name_or_path` is required"):
        ModelArguments()


def test_cpu_precision_is_fp32_and_half_precision_needs_a_gpu_or_bf16_instructions(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    assert choose_precision().load_dtype == torch.float32
    with pytest.raises(ConfigError, match="fp16: true needs a GPU"):
        choose_precision(fp16=True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(ConfigError, match="bf16: true needs a GPU or, for bf16, a CPU with bfloat16"):
        choose_precision(bf16=True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert choose_precision(bf16=True) == Precision(bf16=True, fp16=False)
    assert choose_precision().load_dtype == torch.float32  # asked for only


def test_lora_arguments_are_validated():
    assert FinetuningArguments(lora_rank=4).lora_alpha == 8
    with pytest.raises(ConfigError, match="lora_rank=0 must be at least 1"):
        FinetuningArguments(lora_rank=0)
    with pytest.raises(ConfigError, match="mixes `all` with module names"):
        FinetuningArguments(lora_target=["all", "q_proj"])
