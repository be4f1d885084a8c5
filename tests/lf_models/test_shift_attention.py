import pytest
import torch

from lf_data.errors import ConfigError
from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.loader import load_model
from lf_models.precision import choose_precision
from lf_models.shift_attention import NAME


def test_s2_attention_trains_in_groups_and_is_plain_attention_in_eval(tiny_llama):
    s2 = load_model(ModelArguments(model_name_or_path=str(tiny_llama), shift_attn=True), FinetuningArguments(),
                    choose_precision(), True)
    plain = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), FinetuningArguments(),
                       choose_precision(), True)
    assert s2.config._attn_implementation == NAME
    ids = torch.randint(3, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    s2_train = s2(input_ids=ids).logits
    plain_train = plain(input_ids=ids).logits
    group = 8  # a quarter of 32 tokens: later tokens see less of the past than with full attention
    assert not torch.allclose(s2_train[:, group:], plain_train[:, group:], atol=1e-4)
    s2_train.sum().backward()  # trains
    assert all(p.grad is not None for n, p in s2.named_parameters() if "lora_B" in n)
    s2.eval()
    plain.eval()
    with torch.no_grad():  # evaluation uses full attention: same model, same logits
        torch.testing.assert_close(s2(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5, rtol=1e-4)


def test_s2_attention_is_refused_for_other_families(tiny_model_factory):
    with pytest.raises(ConfigError, match="shift_attn supports llama"):
        load_model(ModelArguments(model_name_or_path=str(tiny_model_factory("gpt_neox")), shift_attn=True),
                   FinetuningArguments(), choose_precision(), True)


def test_no_token_sees_a_later_one(tiny_llama):
    """Changing the last tokens must not change any earlier output, in training mode too."""
    s2 = load_model(ModelArguments(model_name_or_path=str(tiny_llama), shift_attn=True), FinetuningArguments(),
                    choose_precision(), True)
    ids = torch.randint(3, 300, (1, 32), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 28:] = 7
    with torch.no_grad():
        a, b = s2(input_ids=ids).logits, s2(input_ids=changed).logits
    torch.testing.assert_close(a[:, :28], b[:, :28], atol=1e-5, rtol=1e-4)
