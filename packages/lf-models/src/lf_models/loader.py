"""Load a tokenizer and a model from a model reference, and attach adapters for training."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.errors import ConfigError
from lf_models.adapters import (  # noqa: F401 (find_all_linear_modules re-exported)
    find_all_linear_modules,
    refuse_pickled_weights,
    setup_finetuning,
)
from lf_models.args import FinetuningArguments, ModelArguments, check_model_combination
from lf_models.bundled import BUNDLED_MODELS
from lf_models.patches import (
    apply_rope_scaling,
    attention_implementation,
    mark_moe_leaf_modules,
    resize_embeddings,
    upcast_layernorm,
    upcast_lmhead_output,
)
from lf_models.precision import Precision
from lf_models.quantization import quantization_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from, after bundled names and GGUF files are resolved."""

    path: str
    default_template: str | None = None
    """What `lf_models.default_template` says for this model; `lf_data.run_folder.resolve_template` uses it."""
    local: bool = True


def resolve_model(model_args: ModelArguments) -> ModelSource:
    """Turn `model_name_or_path` into a loadable folder or hub id; check local paths exist (cheap)."""
    from lf_models.default_template import default_template
    from lf_models.gguf_import import converted_dir

    ref = model_args.model_name_or_path
    if ref in BUNDLED_MODELS:
        bundled = BUNDLED_MODELS[ref]
        return ModelSource(str(converted_dir(bundled.path(), bundled.eos_token)), bundled.template)
    path = Path(ref).expanduser()
    if ref.endswith(".gguf"):
        converted = str(converted_dir(path))
        return ModelSource(converted, default_template(converted))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {ref!r} has no config.json; point model_name_or_path at a "
                              "Hugging Face model folder (config.json + weights).")
        return ModelSource(str(path), default_template(ref))
    if path.exists():
        raise ConfigError(f"model_name_or_path {ref!r} is a file; give a model folder, a .gguf file or a hub id.")
    if not HUB_ID.match(ref) or ref.startswith((".", "~")):
        raise ConfigError(f"model path {ref!r} does not exist. Give an existing folder, a .gguf file, a hub id "
                          f"(org/name) or a bundled model: {', '.join(BUNDLED_MODELS)}.")
    return ModelSource(ref, default_template(ref), local=False)


def _hub_kwargs(model_args: ModelArguments, source: ModelSource) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": model_args.trust_remote_code}
    if not source.local:
        kwargs.update(cache_dir=model_args.cache_dir, revision=model_args.model_revision)
    return kwargs


def _load_error(what: str, source: ModelSource, err: Exception) -> ConfigError:
    hint = (" Without network access, download the model and point model_name_or_path at its folder."
            if not source.local else "")
    return ConfigError(f"could not load the {what} of {source.path!r}: {type(err).__name__}: {str(err).rstrip('.')}.{hint}")


def load_tokenizer(model_args: ModelArguments, source: ModelSource | None = None) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    source = source or resolve_model(model_args)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **_hub_kwargs(model_args, source))
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", source, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_args.new_special_tokens:
        added = tokenizer.add_special_tokens({"additional_special_tokens": model_args.new_special_tokens},
                                             replace_extra_special_tokens=False)
        logger.info("added %d special token(s) to the tokenizer", added)
    return tokenizer


def load_model(model_args: ModelArguments, finetuning_args: FinetuningArguments, precision: Precision,
               is_trainable: bool, source: ModelSource | None = None, tokenizer: Any = None,
               cutoff_len: int | None = None, add_value_head: bool = False) -> PreTrainedModel:
    """The model in the compute dtype, patched, quantised and with adapters as the config says.

    Trainable parameters are kept in fp32 under mixed precision (stable optimizer updates) and in
    bf16 under `pure_bf16`. `tokenizer` lets the embeddings grow to new tokens; `cutoff_len` sets
    the RoPE scaling factor; `add_value_head` wraps the model in a `ValueHeadModel` (reward models,
    PPO), loading the head saved with the last adapter when there is one.
    """
    import torch
    from transformers import AutoConfig

    from lf_models.families import model_class_for

    check_model_combination(model_args, finetuning_args)
    source = source or resolve_model(model_args)
    hub = _hub_kwargs(model_args, source)
    try:
        config = AutoConfig.from_pretrained(source.path, **hub)
    except (OSError, ValueError) as err:
        raise _load_error("config", source, err) from None
    dtype = torch.bfloat16 if model_args.pure_bf16 else precision.load_dtype
    apply_rope_scaling(config, model_args.rope_scaling, cutoff_len)
    kwargs: dict[str, Any] = {"dtype": dtype}
    quantization = quantization_config(model_args, config, dtype)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    attention = attention_implementation(model_args.flash_attn)
    if model_args.shift_attn:
        from lf_models import shift_attention

        if config.model_type not in shift_attention.FAMILIES:
            raise ConfigError(f"shift_attn supports {', '.join(shift_attention.FAMILIES)} models, not "
                              f"{config.model_type}.")
        attention = shift_attention.register()
    if attention is not None:
        kwargs["attn_implementation"] = attention
    try:
        with refuse_pickled_weights(source.path, "weights"):
            model = model_class_for(config).from_pretrained(source.path, config=config, **kwargs, **hub)
    except (OSError, ValueError) as err:
        raise _load_error("weights", source, err) from None
    except ImportError as err:
        raise ConfigError(f"loading {source.path!r} needs a package that is missing: {err}") from None
    logger.info("attention: %s", getattr(model.config, "_attn_implementation", "default"))
    mark_moe_leaf_modules(model)

    resized = tokenizer is not None and (model_args.new_special_tokens or model_args.resize_vocab) \
        and resize_embeddings(model, tokenizer)
    if resized and is_trainable and finetuning_args.finetuning_type == "lora":
        names = {n.split(".")[-1] for n, m in model.named_modules()
                 if m is model.get_input_embeddings() or m is model.get_output_embeddings()}
        finetuning_args.additional_target = sorted(set(finetuning_args.additional_target or []) | names)
        logger.info("new tokens: %s train fully with the adapter", ", ".join(sorted(names)))
    if model_args.upcast_layernorm:
        upcast_layernorm(model)
    if model_args.upcast_lmhead_output:
        upcast_lmhead_output(model)

    model = setup_finetuning(model, model_args, finetuning_args, is_trainable)
    if add_value_head:
        from lf_data.run_folder import VALUE_HEAD_FILE
        from lf_models.value_head import ValueHeadModel

        model = ValueHeadModel(model)
        saved = [p for p in (model_args.adapter_name_or_path or [])[-1:] if (Path(p) / VALUE_HEAD_FILE).is_file()]
        if saved:
            model.load_value_head(saved[0])
        model.v_head.requires_grad_(is_trainable)
    if is_trainable:
        keep = torch.bfloat16 if model_args.pure_bf16 else torch.float32
        for param in model.parameters():
            if param.requires_grad and param.dtype != keep:
                param.data = param.data.to(keep)
        model.train()
        trainable, total = count_parameters(model)
        logger.info("trainable params: %s || all params: %s || trainable%%: %.4f",
                    f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    else:
        model.eval()
    return model


def count_parameters(model: Any) -> tuple[int, int]:
    def numel(p: Any) -> int:  # DeepSpeed ZeRO-3 leaves empty placeholders; ds_numel is the real size
        return getattr(p, "ds_numel", 0) or p.numel()

    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(numel(p) for p in model.parameters())
    return trainable, total


def tokenizer_for_reference(reference: str, trust_remote_code: bool = False) -> tuple[PreTrainedTokenizerBase, str | None]:
    """(tokenizer, default template) for any model reference LF understands; used by `lf data`."""
    from lf_models.default_template import default_template

    model_args = ModelArguments(model_name_or_path=reference, trust_remote_code=trust_remote_code)
    path = Path(reference).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and any((path / f).is_file() for f in TOKENIZER_FILES):
        source = ModelSource(str(path), default_template(reference))  # a tokenizer alone: no model needed
    else:
        source = resolve_model(model_args)
    return load_tokenizer(model_args, source), source.default_template
