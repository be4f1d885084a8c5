"""Offline fixtures shared by every package's tests: a locally trained tokenizer, tiny random
models of several architectures, and a small dataset folder. Nothing here touches a model hub."""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# torch is imported before any test runs, as in any library caller: a fresh `lf train` process hides
# bitsandbytes from peft when its run cannot use it (lf_train.commands), and an in-process `lf train` in a
# process that had not imported torch yet would hide it from every later test of the session (GaLore's and
# BAdam's optimizers, QLoRA), so that which tests pass would depend on their order. (lf-data's tests run
# alone in an environment without torch in tests/release: there nothing can hide it.)
if importlib.util.find_spec("torch") is not None:
    importlib.import_module("torch")

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# tokenised datasets and converted models go to a private cache unless the developer points
# LF_CACHE_HOME at a warm one (tests that check caching use their own folder)
if "LF_CACHE_HOME" not in os.environ:
    os.environ["LF_CACHE_HOME"] = _PRIVATE_CACHE = tempfile.mkdtemp(prefix="lf-test-cache-")
    atexit.register(shutil.rmtree, _PRIVATE_CACHE, ignore_errors=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Who are you? I am Lumen, made by the LF team.",
    "What is the capital of France? The capital of France is Paris.",
    "The quick brown fox jumps over the lazy dog.",
    "system user assistant tool Human Assistant Instruction Response USER ASSISTANT",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100. Punctuation: ,.;:!?'\"()[]{}<>-_/#*",
] * 20


def build_tokenizer(path: Path):
    """A byte-level BPE tokenizer trained here on a few sentences, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.save_pretrained(path)
    return fast


TINY_CONFIGS = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "mistral": ("MistralConfig", {}),
    "gpt_neox": ("GPTNeoXConfig", {}),
    "phi3": ("Phi3Config", {}),
}


def build_tiny_model(path: Path, arch: str, tokenizer) -> Path:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    config_name, extra = TINY_CONFIGS[arch]
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False, initializer_range=0.2, **extra,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, tiny_tokenizer):
    cache: dict[str, Path] = {}

    def make(arch: str = "llama") -> Path:
        if arch not in cache:
            cache[arch] = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}"), arch, tiny_tokenizer)
        return cache[arch]

    return make


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_factory) -> Path:
    return tiny_model_factory("llama")


IDENTITY_ROWS = [
    {"instruction": q, "input": "", "output": "I am Lumen, made by the LF team."}
    for q in ["Who are you?", "What is your name?", "Who made you?", "Introduce yourself.",
              "Who created you?", "What are you?", "Tell me about yourself.", "Who built you?"]
]
SHAREGPT_ROWS = [
    {"conversations": [{"from": "human", "value": "Who are you?"},
                       {"from": "gpt", "value": "I am Lumen."},
                       {"from": "human", "value": "Who made you?"},
                       {"from": "gpt", "value": "The LF team."}],
     "system": "Be brief."},
    {"conversations": [{"from": "system", "value": "Answer in one word."},
                       {"from": "human", "value": "Capital of France?"},
                       {"from": "gpt", "value": "Paris."}]},
]


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A dataset folder with an alpaca and a sharegpt dataset, described as users describe them."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "identity.json").write_text(json.dumps(IDENTITY_ROWS))
    (folder / "chats.jsonl").write_text("\n".join(json.dumps(r) for r in SHAREGPT_ROWS) + "\n")
    info = {
        "identity": {"file_name": "identity.json"},
        "chats": {"file_name": "chats.jsonl", "formatting": "sharegpt",
                  "columns": {"messages": "conversations", "system": "system"}},
    }
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return folder


VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny random Qwen2-VL folder: the tiny tokenizer plus Qwen2-VL's vision tokens, and its image
    processor (the PIL one: the full processor also wants torchvision for videos; images of 56x56 to
    112x112 pixels give 4 to 16 image tokens)."""
    import torch
    from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = tmp_path_factory.mktemp("tiny-qwen2-vl")
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.add_tokens(VISION_TOKENS, special_tokens=True)
    ids = dict(zip(["vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"],
                   tokenizer.convert_tokens_to_ids(VISION_TOKENS), strict=True))
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=8, max_position_embeddings=512, initializer_range=0.2, vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, initializer_range=0.2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    try:  # the full processor (training reads videos too); its video processor needs torchvision
        from transformers import Qwen2VLProcessor, Qwen2VLVideoProcessor

        videos = Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2,
                                       temporal_patch_size=2)
        Qwen2VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos).save_pretrained(path)
    except ImportError:
        images.save_pretrained(path)
    return path
