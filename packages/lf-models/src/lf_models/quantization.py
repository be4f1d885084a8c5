"""Quantisation: on the fly with bitsandbytes (QLoRA), or checkpoints that come quantised.

Pre-quantised checkpoints (GPTQ, AWQ, AQLM, ...) are recognised from their config and loaded
through their backend by transformers; a missing backend package is named before loading.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from lf_data.errors import ConfigError
from lf_models.args import ModelArguments

# quant_method -> (import names that must exist, what to install)
BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gptq": (("gptqmodel",), "gptqmodel (and optimum)"),
    "awq": (("awq",), "autoawq"),
    "aqlm": (("aqlm",), "aqlm[gpu]"),
    "eetq": (("eetq",), "eetq"),
    "hqq": (("hqq",), "hqq"),
    "quanto": (("optimum.quanto",), "optimum-quanto"),
    "bitsandbytes": (("bitsandbytes",), "bitsandbytes (pip install 'lf-models[quant]')"),
    "compressed-tensors": (("compressed_tensors",), "compressed-tensors"),
    "fbgemm_fp8": (("fbgemm_gpu",), "fbgemm-gpu"),
    "torchao": (("torchao",), "torchao"),
}


def existing_quantization(config: Any) -> str | None:
    """The quant_method a checkpoint was saved with, if any (GGUF imports are plain weights)."""
    found = getattr(config, "quantization_config", None)
    if not found:
        return None
    method = found.get("quant_method") if isinstance(found, dict) else getattr(found, "quant_method", None)
    method = getattr(method, "value", method)
    return None if method == "gguf" else str(method)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def quantization_config(model_args: ModelArguments, config: Any, compute_dtype: Any) -> Any | None:
    """What to pass as `quantization_config` to from_pretrained (None: nothing to add)."""
    method = existing_quantization(config)
    if method is not None:
        if model_args.quantization_bit is not None:
            raise ConfigError(f"{model_args.model_name_or_path} is already quantised ({method}); "
                              "remove quantization_bit.")
        modules, package = BACKENDS.get(method, ((), method))
        if not all(_installed(m) for m in modules):
            raise ConfigError(f"{model_args.model_name_or_path} is quantised with {method}; loading it needs "
                              f"{package}, which is not installed.")
        return None  # transformers reads the checkpoint's own quantization_config
    if model_args.quantization_bit is None:
        return None
    if not _installed("bitsandbytes"):
        raise ConfigError("quantization_bit needs bitsandbytes: pip install 'lf-models[quant]'.")
    from transformers import BitsAndBytesConfig

    if model_args.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_args.quantization_type,
        bnb_4bit_use_double_quant=model_args.double_quantization,
        bnb_4bit_compute_dtype=compute_dtype,
    )
