"""`lf expand`: LLaMA Pro block expansion (Wu et al., 2024, "LLaMA Pro: Progressive LLaMA with Block
Expansion").

After every `len(layers) / num_expand` decoder layers a copy of the last one is inserted whose output
projections (`o_proj`, `down_proj`, their biases too) are zero: the copy adds nothing to the residual
stream, so the expanded model computes exactly what the original did, and training only the new
blocks (`finetuning_type: freeze`, `use_llama_pro: true`, `freeze_trainable_layers: num_expand`)
adds knowledge without overwriting the old layers. The folder (safetensors, config with the new
layer count, tokenizer, generation config) is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any

from lf_data.atomic_files import write_yaml_atomic
from lf_data.config import AtLeastOne, parse_sections, section
from lf_data.errors import ConfigError
from lf_models.args import ModelArguments

logger = logging.getLogger(__name__)
ZEROED = ("o_proj", "down_proj")
"""Modules whose output enters the residual stream in Llama-like blocks: zero in an expanded block."""
PER_LAYER_CONFIG = ("layer_types", "no_rope_layers")
"""Config lists with one entry per layer: the new block takes the entry of the layer it copies."""
EXPAND_CONFIG = "lf_expand.yaml"


@section
class ExpandArguments:
    num_expand: Annotated[int, AtLeastOne] | None = None
    """Blocks to add (required); the layer count must be a multiple of it."""
    output_dir: str | None = None
    """Folder to write the expanded model to (required)."""
    shard_size: str = "2GB"
    """Largest safetensors shard (for example 2GB, 500MB)."""
    overwrite_output_dir: bool = False
    """Replace a non-empty output_dir."""

    def __post_init__(self) -> None:
        if self.num_expand is None:
            raise ConfigError("`num_expand` is required: the number of blocks to add (for example 8 for a 32-layer "
                              "model: one after every 4 layers).")
        if not self.output_dir:
            raise ConfigError("`output_dir` is required: the folder the expanded model is written to.")


@dataclasses.dataclass
class ExpandPlan:
    """An expansion checked in full before any weight loads."""

    model: ModelArguments
    expand: ExpandArguments
    source: Any  # lf_models.loader.ModelSource
    target: Path
    layers: int

    def resolved(self) -> dict[str, Any]:
        return {"model_name_or_path": self.model.model_name_or_path, **dataclasses.asdict(self.expand)}

    def describe(self) -> list[str]:
        new = expanded_indices(self.layers, self.expand.num_expand)
        return [f"expand {self.model.model_name_or_path} from {self.layers} to {self.layers + len(new)} layers "
                f"(new blocks at {', '.join(map(str, new))})",
                f"write it to {self.target}" + (" (replacing it)" if self.target.exists() else ""),
                f"then train with finetuning_type: freeze, use_llama_pro: true, "
                f"freeze_trainable_layers: {self.expand.num_expand}"]


def expanded_indices(layers: int, num_expand: int) -> list[int]:
    """Where the new blocks sit in the expanded model: one closes every `layers / num_expand + 1`."""
    stride = layers // num_expand + 1
    return [stride * k - 1 for k in range(1, num_expand + 1)]


def check_expand(config: dict[str, Any], source: str = "") -> ExpandPlan:
    """Keys, the model's config (layer count divisible by num_expand, not quantised) and the target."""
    from transformers import AutoConfig

    from lf_models.loader import resolve_model
    from lf_models.quantization import existing_quantization

    model_args, expand_args = parse_sections(config, ModelArguments, ExpandArguments, source=source)
    if model_args.quantization_bit is not None or model_args.adapter_name_or_path:
        raise ConfigError("lf expand copies full-precision weights: remove quantization_bit and adapter_name_or_path "
                          "(merge adapters first with lf export).")
    model_source = resolve_model(model_args)
    try:
        hf_config = AutoConfig.from_pretrained(model_source.path, trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not read the config of {model_source.path!r}: {err}") from None
    method = existing_quantization(hf_config)
    if method is not None:
        raise ConfigError(f"{model_args.model_name_or_path} is quantised ({method}); expand the full-precision model.")
    text = getattr(hf_config, "text_config", None) or hf_config
    layers = getattr(text, "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise ConfigError(f"{model_args.model_name_or_path}: its config has no num_hidden_layers; lf expand works on "
                          "decoder-only models (Llama, Qwen, Mistral, ...).")
    if layers % expand_args.num_expand:
        divisors = [d for d in range(1, layers + 1) if layers % d == 0]
        raise ConfigError(f"num_expand={expand_args.num_expand}: the model has {layers} layers, which must be a "
                          f"multiple of num_expand; choose one of {', '.join(map(str, divisors))}.")
    target = Path(expand_args.output_dir).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"output_dir {str(target)!r} is a file; choose a folder path.")
    if Path(model_source.path).expanduser().resolve() in (target, *target.parents):
        raise ConfigError(f"output_dir {str(target)!r} is or contains the model being expanded; choose another folder.")
    if target.is_dir() and any(target.iterdir()) and not expand_args.overwrite_output_dir:
        raise ConfigError(f"output_dir {str(target)!r} is not empty. Choose another folder, or set "
                          "overwrite_output_dir=true to replace it.")
    return ExpandPlan(model_args, expand_args, model_source, target, layers)


def expand_model(model: Any, num_expand: int) -> list[int]:
    """Insert `num_expand` identity blocks into `model` in place; returns their indices."""
    import torch

    from lf_models.adapters import decoder_layers

    layers = decoder_layers(model)
    count = len(layers)
    split = count // num_expand
    new_layers, added = [], []
    for index, layer in enumerate(layers):
        new_layers.append(layer)
        if (index + 1) % split == 0:
            block = copy.deepcopy(layer)
            zeroed = [name for name, _ in block.named_parameters() if set(name.split(".")) & set(ZEROED)]
            if not zeroed:
                raise ConfigError(f"{type(model).__name__}: its decoder blocks have no {' or '.join(ZEROED)} "
                                  "projection to zero, so a new block would not start as the identity; lf expand "
                                  "supports Llama-like models.")
            with torch.no_grad():
                for name, param in block.named_parameters():
                    if name in zeroed:
                        param.zero_()
            added.append(len(new_layers))
            new_layers.append(block)
    parent_name, _, attr = next(n for n, m in model.named_modules() if m is layers).rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, torch.nn.ModuleList(new_layers))
    for index, layer in enumerate(new_layers):  # the KV cache is indexed by each attention's layer_idx
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    configs = {id(c): c for c in (model.config, getattr(model.config, "text_config", None)) if c is not None}
    for config in configs.values():
        if getattr(config, "num_hidden_layers", None) != count:
            continue
        for key in PER_LAYER_CONFIG:
            values = getattr(config, key, None)
            if isinstance(values, list) and len(values) == count:
                setattr(config, key, [values[i] for i in range(count) for _ in range(2 if (i + 1) % split == 0 else 1)])
        config.num_hidden_layers = count + num_expand
    return added


def run_expand(config: dict[str, Any], source: str = "") -> Path:
    """Expand the model as `config` says and write it to output_dir; returns the folder."""
    plan = check_expand(config, source)
    from transformers import AutoConfig, AutoTokenizer

    from lf_models.export import staged_folder
    from lf_models.families import model_class_for

    target, trust = plan.target, plan.model.trust_remote_code
    hf_config = AutoConfig.from_pretrained(plan.source.path, trust_remote_code=trust)
    model = model_class_for(hf_config).from_pretrained(plan.source.path, dtype="auto", trust_remote_code=trust)
    tokenizer = AutoTokenizer.from_pretrained(plan.source.path, trust_remote_code=trust)
    added = expand_model(model, plan.expand.num_expand)
    logger.info("expanded %d -> %d layers; new blocks at %s", plan.layers, plan.layers + len(added), added)

    with staged_folder(target) as tmp:
        model.save_pretrained(tmp, max_shard_size=plan.expand.shard_size)
        tokenizer.save_pretrained(tmp)
        write_yaml_atomic(tmp / EXPAND_CONFIG, {**plan.resolved(), "expanded_layers": added})
    print("\n".join([
        "", f"Done. The expanded model ({plan.layers} + {len(added)} layers) is in {target}/", "",
        "Train only the new blocks with:",
        f"  model_name_or_path: {target}", "  finetuning_type: freeze", "  use_llama_pro: true",
        f"  freeze_trainable_layers: {plan.expand.num_expand}"]))
    return target
