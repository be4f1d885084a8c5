"""LlamaFactory 0.9.5's OFT/QOFT, LLaMA Pro (`lf expand` + use_llama_pro) and new-token keys,
run the way its recipes run them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from model_helpers import two_steps

from lf_data.cli import main as lf
from lf_data.errors import ConfigError
from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.loader import load_model, load_tokenizer
from lf_models.precision import choose_precision

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}




def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def train_config(model: Path, data_dir: Path, out: Path, **extra) -> dict:
    """A short `lf train` run over the test data (the keys of a LlamaFactory recipe)."""
    return {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "dataset": "identity",
            "dataset_dir": str(data_dir), "template": "chatml", "cutoff_len": 64, "output_dir": str(out),
            "per_device_train_batch_size": 4, "learning_rate": 1.0e-2, "max_steps": 3, "logging_steps": 1,
            "save_steps": 100, "seed": 0, "report_to": "none", "disable_tqdm": True, **extra}


def run(command: str, config: dict, tmp_path: Path, *flags: str) -> int:
    path = tmp_path / f"{command}.yaml"
    path.write_text(yaml.safe_dump(config))
    return lf([command, str(path), *flags])


# -- OFT / QOFT -------------------------------------------------------------------------------------
def test_oft_trains_exactly_the_orthogonal_blocks_of_its_targets(tiny_llama):
    args = FinetuningArguments(finetuning_type="oft", oft_target=["q_proj", "down_proj"], additional_target=["lm_head"])
    model = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), args, choose_precision(), True)
    config = model.peft_config["default"]
    assert type(config).__name__ == "OFTConfig" and (config.r, config.oft_block_size) == (0, 32)
    names = trainable(model)
    oft = {n for n in names if ".oft_R." in n}
    assert {n.split(".")[-4] for n in oft} == {"q_proj", "down_proj"} and len(oft) == 4  # 2 layers x 2 targets
    assert names - oft == {n for n in names if "lm_head.modules_to_save" in n} != set()
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert two_steps(model) == names
    every = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), FinetuningArguments(finetuning_type="oft"),
                       choose_precision(), True)  # oft_target: all = every linear layer but the head
    assert {n.split(".")[-4] for n in trainable(every)} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"}


def test_oft_rank_or_block_size_and_options_that_need_lora():
    rank = FinetuningArguments(finetuning_type="oft", oft_rank=4, oft_block_size=0)
    assert (rank.oft_rank, rank.oft_block_size) == (4, 0)
    with pytest.raises(ConfigError, match="oft_rank=4 and oft_block_size=32: set exactly one"):
        FinetuningArguments(finetuning_type="oft", oft_rank=4)
    with pytest.raises(ConfigError, match="oft_rank=0 and oft_block_size=0"):
        FinetuningArguments(finetuning_type="oft", oft_block_size=0)
    with pytest.raises(ConfigError, match="use_dora needs finetuning_type: lora"):
        FinetuningArguments(finetuning_type="oft", use_dora=True)
    with pytest.raises(ConfigError, match="module_dropout=1.5"):
        FinetuningArguments(finetuning_type="oft", module_dropout=1.5)
    with pytest.raises(ConfigError, match="create_new_adapter needs finetuning_type: lora or oft"):
        FinetuningArguments(finetuning_type="freeze", create_new_adapter=True)


def test_oft_target_is_checked_before_weights_load(tiny_llama, data_dir, tmp_path, capsys):
    recipe = train_config(tiny_llama, data_dir, tmp_path / "out", finetuning_type="oft", oft_target="q_proj,qq_proj")
    assert run("train", recipe, tmp_path, "--check") == 1
    assert "oft_target names ['qq_proj'] that this model does not have" in capsys.readouterr().err
    recipe.update(oft_target="q_proj")
    assert run("train", recipe, tmp_path, "--check") == 0
    assert "oft tuning of" in capsys.readouterr().out


def test_oft_rank_sets_the_number_of_blocks(tiny_llama):
    args = FinetuningArguments(finetuning_type="oft", oft_rank=4, oft_block_size=0, oft_target=["q_proj"])
    model = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), args, choose_precision(), True)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    block = 32 // 4  # hidden size 32 in 4 blocks of 8; each block's skew matrix stores 8*7/2 values
    assert layer.oft_R["default"].weight.shape == (4, block * (block - 1) // 2)


def test_qoft_trains_orthogonal_blocks_on_a_4bit_model(tiny_llama):
    model_args = ModelArguments(model_name_or_path=str(tiny_llama), quantization_bit=4)
    model = load_model(model_args, FinetuningArguments(finetuning_type="oft"), choose_precision(), True)
    assert "Linear4bit" in {type(m).__name__ for m in model.modules()}
    names = trainable(model)
    assert names and names == {n for n, _ in model.named_parameters() if ".oft_R." in n}
    assert two_steps(model) == names
    with pytest.raises(ConfigError, match=r"finetuning_type: lora \(QLoRA\) or oft \(QOFT\)"):
        load_model(model_args, FinetuningArguments(finetuning_type="freeze"), choose_precision(), True)


def test_oft_run_loads_in_plain_peft_exports_and_chats(tiny_llama, data_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "oft"
    recipe = train_config(tiny_llama, data_dir, out, finetuning_type="oft", oft_block_size=32, oft_target="all",
                          learning_rate=5.0e-2)
    assert run("train", recipe, tmp_path) == 0
    assert yaml.safe_load((out / "adapter_config.json").read_text())["peft_type"] == "OFT"

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out).eval()
    ours = load_model(ModelArguments(model_name_or_path=str(tiny_llama), adapter_name_or_path=[str(out)]),
                      FinetuningArguments(finetuning_type="oft"), choose_precision(), is_trainable=False)
    assert (logits(plain) - logits(base)).abs().max() > 1e-2  # the adapter learnt something
    torch.testing.assert_close(logits(ours), logits(plain), atol=1e-5, rtol=1e-5)  # LF merged it into the base

    exported = tmp_path / "merged"
    assert lf(["export", f"adapter_name_or_path={out}", f"export_dir={exported}", "finetuning_type=oft"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(exported)
    torch.testing.assert_close(logits(merged), logits(plain), atol=1e-5, rtol=1e-5)
    capsys.readouterr()
    assert lf(["chat", f"adapter_name_or_path={out}", "finetuning_type=oft", "--query", "Who are you?",
               "temperature=0", "max_new_tokens=4"]) == 0
    assert capsys.readouterr().out.strip()

    stacked = load_model(ModelArguments(model_name_or_path=str(tiny_llama), adapter_name_or_path=[str(out)]),
                         FinetuningArguments(finetuning_type="oft", create_new_adapter=True), choose_precision(), True)
    torch.testing.assert_close(logits(stacked.eval()), logits(plain), atol=1e-5, rtol=1e-5)  # fresh OFT: identity
    assert trainable(stacked) == {n for n, _ in stacked.named_parameters() if ".oft_R." in n}


# -- LLaMA Pro --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def four_layers(tmp_path_factory, tiny_llama) -> Path:
    """The tiny Llama with 4 layers (the expansion is spread: one block after every 2 layers)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_llama)
    config.num_hidden_layers = 4
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("four-layers")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(path)
    return path


def test_lf_expand_adds_identity_blocks_spread_evenly(four_layers, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "pro"
    keys = [f"model_name_or_path={four_layers}", "num_expand=2", f"output_dir={out}"]
    assert lf(["expand", *keys, "--check"]) == 0
    assert "from 4 to 6 layers (new blocks at 2, 5)" in capsys.readouterr().out and not out.exists()
    assert lf(["expand", *keys]) == 0
    assert "freeze_trainable_layers: 2" in capsys.readouterr().out
    assert not list(tmp_path.glob(".pro.tmp-*")) and (out / "model.safetensors").is_file()
    original, expanded = AutoModelForCausalLM.from_pretrained(four_layers), AutoModelForCausalLM.from_pretrained(out)
    assert expanded.config.num_hidden_layers == 6 and len(expanded.model.layers) == 6
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(four_layers).get_vocab()
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(expanded, ids), logits(original, ids), atol=1e-5, rtol=0)
    old, new = original.state_dict(), expanded.state_dict()
    for new_index, source in {0: 0, 1: 1, 2: 1, 3: 2, 4: 3, 5: 3}.items():  # block 2 copies 1, block 5 copies 3
        for name, value in new.items():
            if f"layers.{new_index}." not in name:
                continue
            expected = old[name.replace(f"layers.{new_index}.", f"layers.{source}.")]
            if new_index in (2, 5) and ("o_proj" in name or "down_proj" in name):
                expected = torch.zeros_like(expected)
            assert torch.equal(value, expected), name
    # generation uses the KV cache of every block (each attention has its own layer index)
    prompt = ids[:1, :5]
    assert torch.equal(expanded.generate(prompt, max_new_tokens=6, do_sample=False),
                       original.generate(prompt, max_new_tokens=6, do_sample=False))


@pytest.mark.parametrize(("keys", "message"), [
    (["num_expand=3"], "the model has 4 layers, which must be a multiple of num_expand; choose one of 1, 2, 4"),
    ([], "`num_expand` is required"),
    (["num_expand=0"], "num_expand=0"),
    (["num_expand=2", "quantization_bit=4"], "remove quantization_bit"),
])
def test_lf_expand_refuses_bad_input_before_loading(four_layers, tmp_path, keys, message, capsys):
    assert lf(["expand", f"model_name_or_path={four_layers}", f"output_dir={tmp_path / 'x'}", *keys]) == 1
    assert message in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_llama_pro_trains_only_the_expanded_blocks(four_layers, data_dir, tmp_path):
    from safetensors.torch import load_file

    pro = tmp_path / "pro"
    assert lf(["expand", f"model_name_or_path={four_layers}", "num_expand=2", f"output_dir={pro}"]) == 0
    out = tmp_path / "run"
    recipe = train_config(pro, data_dir, out, finetuning_type="freeze", freeze_trainable_layers=2,
                          freeze_trainable_modules="all", use_llama_pro=True)
    assert run("train", recipe, tmp_path) == 0
    before, after = load_file(pro / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    new_blocks = {n for n in before if n.startswith(("model.layers.2.", "model.layers.5."))}
    assert changed == new_blocks  # every parameter of the two new blocks moved; every other tensor is bit-identical


def test_llama_pro_with_lora_adapts_only_the_expanded_blocks(four_layers, tmp_path):
    pro = tmp_path / "pro"
    assert lf(["expand", f"model_name_or_path={four_layers}", "num_expand=2", f"output_dir={pro}"]) == 0
    model = load_model(ModelArguments(model_name_or_path=str(pro)),
                       FinetuningArguments(use_llama_pro=True, freeze_trainable_layers=2, lora_target=["q_proj"]),
                       choose_precision(), True)
    assert {n.split(".")[4] for n in trainable(model)} == {"2", "5"}
    assert {n.split(".")[-4] for n in trainable(model)} == {"q_proj"}
    with pytest.raises(ConfigError, match="6 layers, which is not a multiple of freeze_trainable_layers=4"):
        load_model(ModelArguments(model_name_or_path=str(pro)),
                   FinetuningArguments(finetuning_type="freeze", use_llama_pro=True, freeze_trainable_layers=4),
                   choose_precision(), True)
    with pytest.raises(ConfigError, match="use_llama_pro trains only the expanded blocks"):
        FinetuningArguments(finetuning_type="full", use_llama_pro=True)


# -- new tokens -------------------------------------------------------------------------------------
DESCRIPTIONS = {"<think>": "The quick brown fox", "</think>": "capital of France"}


@pytest.fixture
def token_config(tmp_path) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(DESCRIPTIONS, sort_keys=False))
    return path


def test_new_tokens_get_one_id_each(tiny_llama, token_config):
    args = ModelArguments(model_name_or_path=str(tiny_llama), add_tokens=["lumenword", "foxjump"],
                          new_special_tokens_config=str(token_config), add_special_tokens=["<ignored>"])
    base = len(load_tokenizer(ModelArguments(model_name_or_path=str(tiny_llama))))
    tokenizer = load_tokenizer(args)
    assert len(tokenizer) == base + 4  # the config file replaces add_special_tokens, as in LlamaFactory
    for token in ("lumenword", "foxjump", "<think>", "</think>"):
        ids = tokenizer(f"a {token} b", add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_tokens_to_ids(token) in ids and tokenizer.convert_tokens_to_ids(token) >= base
    special = tokenizer("<think>x</think>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(special, skip_special_tokens=True) == "x"  # special tokens are special
    assert "lumenword" in tokenizer.decode(tokenizer("lumenword")["input_ids"], skip_special_tokens=True)


@pytest.mark.parametrize("method", ["desc_init", "desc_init_w_noise"])
def test_description_init_is_the_mean_of_the_description_rows(tiny_llama, token_config, method):
    from transformers import AutoModelForCausalLM

    args = ModelArguments(model_name_or_path=str(tiny_llama), new_special_tokens_config=str(token_config),
                          add_tokens=["lumenword"], init_special_tokens=method)
    tokenizer = load_tokenizer(args)
    model = load_model(args, FinetuningArguments(finetuning_type="full"), choose_precision(), True, tokenizer=tokenizer)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    rows = base.get_input_embeddings().weight.shape[0]
    for new, old in ((model.get_input_embeddings().weight, base.get_input_embeddings().weight),
                     (model.get_output_embeddings().weight, base.get_output_embeddings().weight)):
        assert new.shape[0] == len(tokenizer) == rows + 3 and torch.equal(new[:rows], old)
        for token, description in DESCRIPTIONS.items():
            ids = tokenizer(description, add_special_tokens=False)["input_ids"]
            expected = old[ids].mean(dim=0)  # the hand computation
            got = new[tokenizer.convert_tokens_to_ids(token)].detach()
            if method == "desc_init":
                assert torch.equal(got, expected), token
            else:  # plus noise of std 1/sqrt(hidden): about 1 away over 32 dimensions
                assert 0.3 < (got - expected).norm() < 1.7, token
        plain = new[tokenizer.convert_tokens_to_ids("lumenword")].detach()  # no description: mean + noise
        assert 0.3 < (plain - old.mean(dim=0)).norm() < 1.7


def test_new_token_keys_are_checked_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="init_special_tokens: desc_init starts each new token from its description"):
        ModelArguments(model_name_or_path="m", init_special_tokens="desc_init")
    with pytest.raises(ConfigError, match="new_special_tokens_config .* cannot be read"):
        ModelArguments(model_name_or_path="m", new_special_tokens_config=str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- <think>\n- </think>\n")
    with pytest.raises(ConfigError, match="must map each new token to a description"):
        ModelArguments(model_name_or_path="m", new_special_tokens_config=str(tmp_path / "list.yaml"))


def test_new_tokens_are_saved_with_the_adapter_and_chat_works(tiny_llama, data_dir, token_config, tmp_path, capsys):
    from transformers import AutoTokenizer

    out = tmp_path / "tokens"
    recipe = train_config(tiny_llama, data_dir, out, finetuning_type="lora", lora_target="all", max_steps=2,
                          new_special_tokens_config=str(token_config), init_special_tokens="desc_init",
                          add_tokens="lumenword")
    assert run("train", recipe, tmp_path) == 0
    saved = AutoTokenizer.from_pretrained(out)
    ids = saved("<think>lumenword</think>", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and min(ids) >= len(saved) - 3
    served = load_model(ModelArguments(model_name_or_path=str(tiny_llama), adapter_name_or_path=[str(out)]),
                        FinetuningArguments(), choose_precision(), is_trainable=False, tokenizer=saved)
    assert served.get_input_embeddings().weight.shape[0] == len(saved)  # the base grew before the adapter loaded
    capsys.readouterr()
    assert lf(["chat", f"adapter_name_or_path={out}", "--query", "Who are you? <think>", "temperature=0",
               "max_new_tokens=4"]) == 0
    assert capsys.readouterr().out.strip()
