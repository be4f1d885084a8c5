"""`cpu_packed_linear`: on a CPU the transformers engine runs the large fp32 linear layers of a text
model through oneDNN on weights packed at load, with the logits and greedy answers of torch's own
product; `cpu_packed_linear: false` keeps the plain layers."""

from __future__ import annotations

import pytest

from lf_serve import load_engine


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory, tiny_tokenizer):
    """One Llama layer wide enough for packing: q/o 512 x 512 (2^18 entries), the MLP 1,024 x 512 and
    the head; k/v (128 x 512) stay below the threshold."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=max(len(tiny_tokenizer), 512), hidden_size=512, intermediate_size=1024,
                         num_hidden_layers=1, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=256, eos_token_id=tiny_tokenizer.eos_token_id,
                         pad_token_id=tiny_tokenizer.pad_token_id, tie_word_embeddings=False, initializer_range=0.2)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wide-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_packed_layers_give_torchs_logits_and_answers(wide_llama):
    import torch

    from lf_serve.engines.cpu_linear import MIN_WEIGHTS, PackedLinear

    config = {"model_name_or_path": str(wide_llama), "template": "chatml", "temperature": 0, "max_new_tokens": 12}
    packed = load_engine(config)
    plain = load_engine({**config, "cpu_packed_linear": False})
    try:
        names = {name.rsplit(".", 1)[-1] for name, m in packed.lm.named_modules() if isinstance(m, PackedLinear)}
        assert names == {"q_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}
        assert packed.packed_layers == 6 and plain.packed_layers == 0
        assert not any(isinstance(m, torch.nn.Linear) and m.weight.numel() >= MIN_WEIGHTS
                       for m in packed.lm.modules())
        assert {type(m) for _, m in plain.lm.named_modules() if m.__class__.__name__.endswith("Linear")} == {torch.nn.Linear}

        prompt = packed.encode_chat([{"role": "user", "content": "Who are you?"}])
        ids = torch.tensor([prompt + [token] for token in (5, 6, 7)])
        with torch.inference_mode():
            ours, theirs = packed.lm(input_ids=ids).logits, plain.lm(input_ids=ids).logits
        assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
        assert not torch.equal(ours, theirs)  # really another product

        chats = [[{"role": "user", "content": f"Tell me about topic {i}."}] for i in range(6)]
        answers = [a.text for a in packed.batch_chat(chats)]
        assert answers == [a.text for a in plain.batch_chat(chats)]
        assert all(a.completion_tokens == 12 for a in packed.batch_chat(chats[:2]))
        # beam search runs transformers' generate on the same packed layers
        beams = {"num_beams": 3, "n": 2}
        assert [a.text for a in packed.chat(chats[0], **beams)] == [a.text for a in plain.chat(chats[0], **beams)]
    finally:
        packed.close()
        plain.close()
