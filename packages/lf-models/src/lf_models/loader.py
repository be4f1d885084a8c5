"""Load a tokenizer and a model from a model reference, and attach adapters for training."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.errors import ConfigError
from lf_data.loading import HubCredentials
from lf_models.adapters import (  # noqa: F401 (find_all_linear_modules re-exported)
    find_all_linear_modules,
    refuse_pickled_weights,
    setup_finetuning,
)
from lf_models.args import ADAPTER_TYPES, FinetuningArguments, ModelArguments, check_model_combination
from lf_models.bundled import BUNDLED_MODELS
from lf_models.patches import (
    apply_rope_scaling,
    attention_implementation,
    mark_moe_leaf_modules,
    upcast_layernorm,
    upcast_lmhead_output,
)
from lf_models.precision import Precision
from lf_models.quantization import keep_4bit_layers_trainable, quantization_config, quantization_load_kwargs

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


def hub_credentials(model_args: ModelArguments) -> HubCredentials:
    """The run's hub tokens and cache folder, for the hub datasets it reads."""
    return HubCredentials(model_args.hf_hub_token, model_args.ms_hub_token, model_args.om_hub_token,
                          model_args.cache_dir)


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
    from lf_models.hubs import download_from_other_hub

    downloaded = download_from_other_hub(model_args)  # USE_MODELSCOPE_HUB / USE_OPENMIND_HUB: a local snapshot
    if downloaded is not None:
        return ModelSource(downloaded, default_template(ref))
    return ModelSource(ref, default_template(ref), local=False)


def _hub_kwargs(model_args: ModelArguments, source: ModelSource) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": model_args.trust_remote_code}
    if not source.local:
        kwargs.update(cache_dir=model_args.cache_dir, revision=model_args.model_revision)
        if model_args.hf_hub_token:
            kwargs["token"] = model_args.hf_hub_token
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
    from lf_models.new_tokens import add_new_tokens

    add_new_tokens(tokenizer, model_args)
    return tokenizer


def class_checkpointing(model_args: ModelArguments, source: ModelSource) -> tuple[str, bool] | None:
    """(name, supports gradient checkpointing) of the class that will load this model, read from its
    config before any weights load; None where only loading tells (remote code, an unreadable config:
    `load_model` says what is wrong with it)."""
    from transformers import AutoConfig

    from lf_models.families import model_class_for

    try:
        config = AutoConfig.from_pretrained(source.path, **_hub_kwargs(model_args, source))
    except (OSError, ValueError):
        return None
    auto = model_class_for(config)
    mapping = getattr(auto, "_model_mapping", None)
    if mapping is None:  # a named class (audio models)
        cls = auto
    elif type(config) in mapping:
        cls = mapping[type(config)]
    else:
        return None
    return cls.__name__, bool(getattr(cls, "supports_gradient_checkpointing", False))


def load_model(model_args: ModelArguments, finetuning_args: FinetuningArguments, precision: Precision,
               is_trainable: bool, source: ModelSource | None = None, tokenizer: Any = None,
               cutoff_len: int | None = None, add_value_head: bool = False,
               device_map: Any = None) -> PreTrainedModel:
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
    if model_args.moe_aux_loss_coef is not None:
        if not hasattr(config, "router_aux_loss_coef"):
            raise ConfigError(f"moe_aux_loss_coef applies to mixture-of-experts models; {config.model_type} has no "
                              "router (remove the key).")
        config.router_aux_loss_coef, config.output_router_logits = model_args.moe_aux_loss_coef, True
    kwargs: dict[str, Any] = {"dtype": dtype}
    quantization = quantization_config(model_args, config, dtype)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs.update(quantization_load_kwargs(model_args))
    if device_map is not None:  # `lf export` with export_device: auto
        kwargs["device_map"] = device_map
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
        if model_args.train_from_scratch:  # the architecture only: random weights, seeded by the run's seed
            logger.info("train_from_scratch: random weights for %s", config.model_type)
            model = model_class_for(config).from_config(config, **kwargs)
        else:
            with refuse_pickled_weights(source.path, "weights"):
                model = model_class_for(config).from_pretrained(source.path, config=config, **kwargs, **hub)
    except (OSError, ValueError) as err:
        raise _load_error("weights", source, err) from None
    except ImportError as err:
        raise ConfigError(f"loading {source.path!r} needs a package that is missing: {err}") from None
    logger.info("attention: %s", getattr(model.config, "_attn_implementation", "default"))
    mark_moe_leaf_modules(model)

    from lf_models.new_tokens import resize_for_new_tokens

    resized = tokenizer is not None and resize_for_new_tokens(model, tokenizer, model_args)
    if resized and is_trainable and finetuning_args.finetuning_type in ADAPTER_TYPES:
        names = {n.split(".")[-1] for n, m in model.named_modules()
                 if m is model.get_input_embeddings() or m is model.get_output_embeddings()}
        finetuning_args.additional_target = sorted(set(finetuning_args.additional_target or []) | names)
        logger.info("new tokens: %s train fully with the adapter", ", ".join(sorted(names)))
    if model_args.upcast_layernorm:
        upcast_layernorm(model)
    if model_args.upcast_lmhead_output:
        upcast_lmhead_output(model)

    if quantization is not None and is_trainable:
        keep_4bit_layers_trainable(model)
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
