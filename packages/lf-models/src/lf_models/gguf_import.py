"""Turn a `.gguf` file into a cached Hugging Face model folder, once per file content.

transformers de-quantises GGUF weights on load (tens of seconds) and refuses to save such a
model, so the weights are copied into a fresh model built from the same config and saved with
safetensors under a folder named by the file's hash; later runs load that folder in seconds.
The conversion reads the file's metadata once (`_read_once`) and builds the target model without
random weights, so SmolLM2's first use takes about half the time it did (33 -> 16 s on 2 cores).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lf_data.atomic_files import shareable
from lf_data.errors import ConfigError

logger = logging.getLogger(__name__)
COMPLETE_MARKER = ".lf-complete"


def cache_root() -> Path:
    return Path(os.environ.get("LF_CACHE_HOME") or Path.home() / ".cache" / "lf")


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def converted_dir(gguf_path: str | os.PathLike, eos_token: str | None = None) -> Path:
    """The cached Hugging Face folder for this GGUF file, converting it on first use."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise ConfigError(f"model file {str(gguf_path)!r} does not exist; check model_name_or_path.")
    target = cache_root() / "gguf" / f"{gguf_path.stem}-{file_digest(gguf_path)[:16]}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ConfigError("reading .gguf files needs the gguf package: pip install 'lf-models[gguf]'") from None

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning("converting %s to a Hugging Face folder once (cached in %s)", gguf_path.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    shareable(tmp)
    try:
        with _read_once():
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                             dtype=torch.float32)
        if eos_token is not None:
            tokenizer.eos_token = eos_token
            tokenizer.pad_token = eos_token
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        if eos_token is not None:
            config.eos_token_id = tokenizer.convert_tokens_to_ids(eos_token)
            config.pad_token_id = config.eos_token_id
        with torch.device("meta"):  # every weight comes from the file: no random initialisation to overwrite
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False, assign=True)
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"GGUF weights do not match the architecture: missing={missing}, "
                               f"unexpected={unexpected}")
        model.tie_weights()
        empty = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
        if empty:
            raise RuntimeError(f"GGUF weights do not match the architecture: no values for {empty}")
        if eos_token is not None:
            model.generation_config.eos_token_id = config.eos_token_id
            model.generation_config.pad_token_id = config.eos_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / COMPLETE_MARKER).write_text(str(gguf_path) + "\n")
        if target.exists():  # a half-finished earlier attempt
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextmanager
def _read_once() -> Iterator[None]:
    """transformers parses a GGUF file's metadata anew for the tokenizer, the config and the weights
    (about 4 s each for SmolLM2's 49k-token vocabulary) and builds gguf's tensor-name map again for every
    submodule of the model (hundreds of times): within this block each is made once. Both are gguf's
    public names, which transformers imports at call time; they are restored on the way out."""
    import gguf

    real_reader, real_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}
    name_maps: dict[tuple[Any, int], Any] = {}

    def reader(path: str | os.PathLike, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = real_reader(path, mode)
        return readers[key]

    def name_map(arch: Any, n_blocks: int) -> Any:
        if (arch, n_blocks) not in name_maps:
            name_maps[arch, n_blocks] = real_name_map(arch, n_blocks)
        return name_maps[arch, n_blocks]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_name_map
