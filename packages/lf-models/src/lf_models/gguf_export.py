"""Write a (merged) Hugging Face causal LM as one GGUF file that llama.cpp, Ollama and transformers read.

Only dense Llama-shaped decoders are supported (`llama`, `mistral`, `qwen2`): their weights map
one to one onto llama.cpp's tensor names (through the `gguf` package's own name map, as llama.cpp's
converter does). Three details matter for a file that loads back with the same logits:

- llama.cpp stores Llama's (and Mistral's) q/k projections with the rows of each head interleaved
  for its RoPE kernel; transformers' GGUF loader undoes that on load, so they are written permuted
  exactly as llama.cpp's `convert_hf_to_gguf.py` permutes them. Qwen2 is stored unpermuted.
- a Mistral model is written as `llama` (as llama.cpp writes it; transformers then reads it back as
  a Llama with the same weights: the installed gguf/transformers pair cannot read the `mistral`
  variant). Its sliding window is not stored: llama.cpp ignores it too.
- the tokenizer travels as metadata: byte-level BPE vocabulary, merges, token types (special tokens
  as CONTROL, other added tokens as USER_DEFINED), special token ids, add-bos flag, pre-tokenizer
  name and the chat template.

Tensor types: `f32` everything F32; `f16` matrices F16 and 1-D tensors (norms, biases) F32;
`q8_0` matrices whose rows split into 32-value blocks Q8_0, the rest as for `f16`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lf_data.errors import ConfigError

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("f32", "f16", "q8_0")
# HF model_type -> (gguf architecture, permute q/k as llama.cpp does)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "llama": ("llama", True),
    "mistral": ("llama", True),
    "qwen2": ("qwen2", False),
}


def check_gguf_supported(config: Any, quantization: str) -> None:
    """Refuse what cannot be written, before any weight loads."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ConfigError("export_format: gguf needs the gguf package: pip install 'lf-models[gguf]'") from None
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"GGUF export supports {', '.join(ARCHITECTURES)} models, not {model_type!r}; "
                          "use export_format: safetensors and llama.cpp's convert_hf_to_gguf.py.")
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"export_quantization={quantization!r}: use one of {', '.join(QUANTIZATIONS)}.")
    rope = getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type not in (None, "default"):
        raise ConfigError(f"GGUF export does not write rope_scaling ({rope_type}) yet; export safetensors instead.")


def _permute(weights: Any, n_head: int, n_head_kv: int | None) -> Any:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py): interleave the two RoPE halves per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensor_data(name: str, array: Any, quantization: str) -> tuple[Any, Any]:
    """(data, raw ggml type or None) for one tensor in the requested type."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim <= 1 or quantization == "f32":
        return array, None
    if quantization == "q8_0" and array.shape[-1] % 32 == 0:
        return quants.quantize(array, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return array.astype(np.float16), None


def _pre_tokenizer_name(tokenizer: Any, fallback: str | None) -> str:
    """llama.cpp's name for how text is split before BPE: a known split regex, else the source's, else default."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:  # older transformers
        GGUF_PRE_TOKENIZER_SPLITS = {}
    state = str(getattr(tokenizer, "backend_tokenizer", None) and tokenizer.backend_tokenizer.pre_tokenizer)
    for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
        if regex and regex in state.replace("\\\\", "\\"):
            return name
    return fallback or "default"


def _tokenizer_fields(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """Vocabulary, merges and token types of a byte-level BPE tokenizer, padded to the model's rows."""
    import json

    from gguf import TokenType

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data.get("model", {})
    if model.get("type") != "BPE" or not any(
            p.get("type") == "ByteLevel" for p in _pre_tokenizers(data.get("pre_tokenizer"))):
        raise ConfigError("GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM style); this "
                          f"tokenizer is {model.get('type')}. Export safetensors and use llama.cpp's converter.")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for index in range(size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
        elif index in added:
            tokens.append(token)
            types.append(TokenType.CONTROL if added[index].get("special") else TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges}


def _pre_tokenizers(node: Any) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [p for child in node.get("pretokenizers", []) for p in _pre_tokenizers(child)]
    return [node]


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def write_gguf(model: Any, tokenizer: Any, path: str | Path, quantization: str = "f16",
               pre_tokenizer: str | None = None, name: str | None = None) -> Path:
    """Write `model` (a plain transformers model, adapters already merged) and `tokenizer` to `path`."""
    import torch
    from gguf import GGML_QUANT_VERSION, MODEL_ARCH_NAMES, GGUFWriter, LlamaFileType, get_tensor_name_map

    config = model.config
    check_gguf_supported(config, quantization)
    arch_name, permute = ARCHITECTURES[config.model_type]
    window = getattr(config, "sliding_window", None)
    if window and window < config.max_position_embeddings:
        logger.warning("the GGUF file has no sliding window (%d): prompts longer than it attend further than in "
                       "transformers, as in every llama.cpp conversion of this model", window)
    arch = next(key for key, value in MODEL_ARCH_NAMES.items() if value == arch_name)
    n_layers = config.num_hidden_layers
    n_head = config.num_attention_heads
    n_head_kv = getattr(config, "num_key_value_heads", None) or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    vocab_size = model.get_input_embeddings().weight.shape[0]

    path = Path(path)
    writer = GGUFWriter(path, arch_name)
    name = name or path.stem
    writer.add_name(name if name.lower() != "mistral" else f"{name}-lf")  # `mistral` alone changes how it is read
    writer.add_type("model")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    rope_theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    if rope_theta is not None:
        writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(vocab_size)
    file_type = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(file_type[quantization])
    if quantization == "q8_0":
        writer.add_quantization_version(GGML_QUANT_VERSION)

    fields = _tokenizer_fields(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer, pre_tokenizer))
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    for token, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        token_id = getattr(tokenizer, f"{token}_token_id", None)
        if token_id is not None:
            add(int(token_id))
    writer.add_add_bos_token(_adds_bos(tokenizer))
    writer.add_add_space_prefix(False)
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()))
    if template:
        writer.add_chat_template(template)

    name_map = get_tensor_name_map(arch, n_layers)
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # no `output.weight`: readers tie it to token_embd
    with torch.no_grad():
        for hf_name, tensor in state.items():
            base, _, suffix = hf_name.rpartition(".")
            gguf_name = name_map.get_name(base)
            if gguf_name is None:
                if "rotary_emb" in hf_name:
                    continue
                raise ConfigError(f"GGUF export does not know where tensor {hf_name!r} goes in llama.cpp's layout.")
            array = tensor.detach().to(torch.float32).cpu().numpy()
            if permute and suffix == "weight" and base.endswith(("self_attn.q_proj", "self_attn.k_proj")):
                array = _permute(array, n_head, n_head if base.endswith("q_proj") else n_head_kv)
            data, raw_type = _tensor_data(gguf_name, array, quantization)
            writer.add_tensor(f"{gguf_name}.{suffix}", data, raw_dtype=raw_type)
            del array
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info("wrote %s (%s, %.1f MB)", path.name, quantization, path.stat().st_size / 1e6)
    return path
