"""Load a tokenizer and a model from a model reference, and attach adapters for training."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.errors import ConfigError
from lf_models.args import FinetuningArguments, ModelArguments
from lf_models.bundled import BUNDLED_MODELS
from lf_models.precision import Precision

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from, after bundled names and GGUF files are resolved."""

    path: str
    default_template: str | None = None
    local: bool = True


def resolve_model(model_args: ModelArguments) -> ModelSource:
    """Turn `model_name_or_path` into a loadable folder or hub id; check local paths exist (cheap)."""
    from lf_models.gguf_import import converted_dir

    ref = model_args.model_name_or_path
    if ref in BUNDLED_MODELS:
        bundled = BUNDLED_MODELS[ref]
        return ModelSource(str(converted_dir(bundled.path(), bundled.eos_token)), bundled.template)
    path = Path(ref).expanduser()
    if ref.endswith(".gguf"):
        return ModelSource(str(converted_dir(path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {ref!r} has no config.json; point model_name_or_path at a "
                              "Hugging Face model folder (config.json + weights).")
        return ModelSource(str(path))
    if path.exists():
        raise ConfigError(f"model_name_or_path {ref!r} is a file; give a model folder, a .gguf file or a hub id.")
    if not HUB_ID.match(ref) or ref.startswith((".", "~")):
        raise ConfigError(f"model path {ref!r} does not exist. Give an existing folder, a .gguf file, a hub id "
                          f"(org/name) or a bundled model: {', '.join(BUNDLED_MODELS)}.")
    return ModelSource(ref, local=False)


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
    return tokenizer


def find_all_linear_modules(model: PreTrainedModel) -> list[str]:
    """Names (last component) of the layers `lora_target: all` adapts: the family's list when it
    has one, else every linear layer except the output head (and a VLM's vision tower)."""
    import torch

    from lf_models.families import family_for

    family = family_for(model.config)
    if family is not None and family.lora_targets:
        return sorted(family.lora_targets)
    head = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if module is head or name.split(".")[-1] in ("lm_head", "score", "v_head"):
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.split(".")[-1])
    return sorted(names)


def _lora_targets(model: PreTrainedModel, targets: list[str]) -> list[str]:
    if targets == ["all"]:
        return find_all_linear_modules(model)
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ConfigError(f"lora_target names {missing} that this model does not have; its linear layers are "
                          f"{', '.join(find_all_linear_modules(model))} (or use lora_target: all).")
    return targets


def load_model(model_args: ModelArguments, finetuning_args: FinetuningArguments, precision: Precision,
               is_trainable: bool, source: ModelSource | None = None) -> PreTrainedModel:
    """The model in the compute dtype, with adapters loaded or attached as the config says."""
    from transformers import AutoConfig

    from lf_models.families import model_class_for

    source = source or resolve_model(model_args)
    try:
        config = AutoConfig.from_pretrained(source.path, **_hub_kwargs(model_args, source))
        model = model_class_for(config).from_pretrained(source.path, config=config, dtype=precision.load_dtype,
                                                        **_hub_kwargs(model_args, source))
    except (OSError, ValueError) as err:
        raise _load_error("weights", source, err) from None

    if finetuning_args.finetuning_type == "lora":
        model = _attach_lora(model, model_args, finetuning_args, is_trainable)
    elif model_args.adapter_name_or_path:
        raise ConfigError("adapter_name_or_path needs finetuning_type: lora.")
    elif not is_trainable:
        model.requires_grad_(False)

    if is_trainable:
        model.train()
        trainable, total = count_parameters(model)
        logger.info("trainable params: %s || all params: %s || trainable%%: %.4f",
                    f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    else:
        model.eval()
    return model


def _attach_lora(model: PreTrainedModel, model_args: ModelArguments, finetuning_args: FinetuningArguments,
                 is_trainable: bool) -> PreTrainedModel:
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    adapters = list(model_args.adapter_name_or_path or [])
    to_merge, to_resume = (adapters[:-1], adapters[-1]) if (adapters and is_trainable) else (adapters, None)
    for path in to_merge:
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    if to_merge:
        logger.info("merged %d adapter(s): %s", len(to_merge), ", ".join(to_merge))
    if to_resume is not None:
        logger.info("continuing training of adapter %s", to_resume)
        return PeftModel.from_pretrained(model, to_resume, is_trainable=True)
    if not is_trainable:
        return model
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=finetuning_args.lora_rank,
        lora_alpha=finetuning_args.lora_alpha,
        lora_dropout=finetuning_args.lora_dropout,
        target_modules=_lora_targets(model, finetuning_args.lora_target),
        modules_to_save=finetuning_args.additional_target,
    )
    return get_peft_model(model, config)


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def tokenizer_for_reference(reference: str, trust_remote_code: bool = False) -> tuple[PreTrainedTokenizerBase, str | None]:
    """(tokenizer, default template) for any model reference LF understands; used by `lf data`."""
    model_args = ModelArguments(model_name_or_path=reference, trust_remote_code=trust_remote_code)
    source = resolve_model(model_args)
    return load_tokenizer(model_args, source), source.default_template
