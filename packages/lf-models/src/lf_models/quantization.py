"""Quantisation: on the fly (`quantization_bit` with `quantization_method` bnb, hqq or eetq; QLoRA
trains adapters on top), or checkpoints that come quantised.

Pre-quantised checkpoints (GPTQ, AWQ, AQLM, ...) are recognised from their config and loaded
through their backend by transformers; a missing backend package or GPU is named before loading.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from lf_data.errors import ConfigError

if TYPE_CHECKING:
    from lf_models.args import ModelArguments

# quantization_method -> the bit widths it quantises to on the fly (LlamaFactory's choices)
ON_THE_FLY: dict[str, tuple[int, ...]] = {"bnb": (4, 8), "hqq": (1, 2, 3, 4, 5, 6, 8), "eetq": (8,)}
# methods whose weights come quantised in the checkpoint: its config.json names them, nothing to choose
PRE_QUANTISED = ("gptq", "awq", "aqlm", "quanto", "mxfp4", "fp8")
HQQ_INSTALL = "pip install 'lf-models[hqq]'"
EETQ_NEEDS = ("a CUDA GPU and the kernels package (pip install kernels): transformers runs EETQ through the "
              "kernels-community CUDA kernels, downloaded on first use; the eetq project ships no wheel on PyPI "
              "for this platform, only a CUDA source build")

# quant_method -> (import names that must exist, what to install)
BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gptq": (("gptqmodel",), "gptqmodel (and optimum)"),
    "awq": (("awq",), "autoawq"),
    "aqlm": (("aqlm",), "aqlm[gpu]"),
    "eetq": (("kernels",), "kernels (pip install kernels) and a CUDA GPU"),
    "hqq": (("hqq",), f"hqq ({HQQ_INSTALL})"),
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


def check_quantization_args(model_args: ModelArguments) -> None:
    """Bit widths and methods that cannot go together, refused when the config is read (no torch)."""
    method, bits = model_args.quantization_method, model_args.quantization_bit
    if bits is not None and method in PRE_QUANTISED:
        raise ConfigError(f"quantization_method: {method} does not quantise on the fly: {method} weights come "
                          "quantised in the checkpoint (its config.json says so) and load without quantization_bit. "
                          "Drop quantization_bit, or choose quantization_method bnb, hqq or eetq.")
    if bits is not None and bits not in ON_THE_FLY[method]:
        allowed = ", ".join(map(str, ON_THE_FLY[method]))
        raise ConfigError(f"quantization_bit={bits}: quantization_method {method} quantises to {allowed} bits.")
    if model_args.quantization_device_map is not None and (bits != 4 or method != "bnb"):
        now = "quantization_bit is not set" if bits is None else f"they are {bits} and {method}"
        raise ConfigError("quantization_device_map: auto spreads a 4-bit bitsandbytes model over the GPUs; it needs "
                          f"quantization_bit: 4 with quantization_method: bnb ({now}).")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_quantization_environment(model_args: ModelArguments) -> None:
    """The packages and the GPU the chosen on-the-fly method needs, named in one line before weights load."""
    if model_args.quantization_bit is None:
        return
    method = model_args.quantization_method
    if method == "bnb":
        if not _installed("bitsandbytes"):
            raise ConfigError("quantization_bit needs bitsandbytes: pip install 'lf-models[quant]'.")
    elif method == "hqq":
        missing = ([f"the hqq package ({HQQ_INSTALL})"] if not _installed("hqq") else []) + \
            (["a CUDA GPU (transformers places HQQ layers on the GPU; CPU placement is refused)"] if not _cuda() else [])
        if missing:
            raise ConfigError(f"quantization_method: hqq needs {' and '.join(missing)}; this machine lacks it.")
    elif method == "eetq" and not (_cuda() and _installed("kernels")):
        raise ConfigError(f"quantization_method: eetq needs {EETQ_NEEDS}.")


def quantization_load_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    """from_pretrained's device placement for an on-the-fly quantised model (nothing otherwise)."""
    if model_args.quantization_bit is None:
        return {}
    if model_args.quantization_device_map == "auto":
        return {"device_map": "auto"}
    if model_args.quantization_method in ("hqq", "eetq"):  # bitsandbytes places itself; these need a GPU given
        import torch

        return {"device_map": {"": torch.cuda.current_device()}}
    return {}


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
    check_quantization_environment(model_args)
    if model_args.quantization_method == "hqq":
        from transformers import HqqConfig

        # axis 0 as LlamaFactory does (HQQ's ATen kernel), 64-weight groups (HQQ's default)
        return HqqConfig(nbits=model_args.quantization_bit, axis=0)
    if model_args.quantization_method == "eetq":
        from transformers import EetqConfig

        return EetqConfig()
    from transformers import BitsAndBytesConfig

    if model_args.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_args.quantization_type,
        bnb_4bit_use_double_quant=model_args.double_quantization,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def keep_4bit_layers_trainable(model: Any) -> int:
    """Keep bitsandbytes' CPU 4-bit layers on their trainable path; returns how many were switched.

    bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a Linear4bit's weight for its inference kernel
    the first time the layer runs in eval mode without gradients (an evaluation during training), for
    good: the training forwards after it go through `gemv_4bit`, which has no backward, so no gradient
    reaches the adapters below that layer (it only logs a warning). A model loaded to train never
    takes that path; inference loads keep the fast kernel."""
    switched = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            switched += 1
    return switched


# transformers `optim` names whose optimizers are torch's or LF's own, never bitsandbytes'
TORCH_OPTIMIZERS = frozenset({
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adamw_apex_fused",
    "adamw_anyprecision", "adafactor", "sgd", "adagrad", "rmsprop", "galore_adamw", "galore_adafactor",
    "galore_adamw_layerwise", "galore_adafactor_layerwise", "apollo_adamw", "apollo_adamw_layerwise",
    "lomo", "adalomo", "grokadamw", "stable_adamw", "schedule_free_adamw", "schedule_free_sgd",
    "schedule_free_radam",
})


def may_use_bitsandbytes(model_args: ModelArguments, optim: str | None, other_models: bool) -> bool:
    """False only when a run provably never touches bitsandbytes: nothing quantised on the fly, an
    optimizer of torch's, no second model (a reference or reward model may come quantised), and a model
    whose config.json, read here without torch, names no quantisation at all. Anything unknown
    (a hub model not in the local cache, another hub) counts as True."""
    import json
    from pathlib import Path

    from lf_models.bundled import BUNDLED_MODELS

    if model_args.quantization_bit is not None or other_models or (optim or "adamw_torch") not in TORCH_OPTIMIZERS:
        return True
    ref = model_args.model_name_or_path
    if ref in BUNDLED_MODELS or ref.endswith(".gguf"):
        return False  # GGUF weights are de-quantised into plain ones
    config_file = Path(ref).expanduser() / "config.json"
    if not config_file.is_file():
        if Path(ref).expanduser().exists() or model_args.model_revision not in (None, "main"):
            return True
        try:  # a hub id: its config.json from the local Hugging Face cache, if there
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "config.json")
        except Exception:  # noqa: BLE001 - not a hub id
            return True
        if not isinstance(cached, str):
            return True
        config_file = Path(cached)
    try:
        found = json.loads(config_file.read_text()).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return True
    return bool(found)  # any quantised checkpoint: its backend decides what it imports
