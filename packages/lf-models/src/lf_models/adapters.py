"""Tuning methods: which parameters train and what is attached to the model.

`lora` (with rsLoRA, DoRA, PiSSA initialisation, continued or stacked adapters) and `oft`
(orthogonal fine-tuning, continued or stacked the same way) through peft, `freeze` (the last or
first N decoder layers, optionally only some of their modules, plus extra modules; with
`use_llama_pro`, the blocks `lf expand` added), and `full`. Every method is tested for exactly which
parameters train.

Multimodal models (a family with `towers`) follow LlamaFactory's four keys: `freeze_vision_tower`,
`freeze_multi_modal_projector` and `freeze_language_model` say which towers stay frozen
(`train_mm_proj_only` freezes all but the projector). Full tuning trains every tower not frozen;
freeze tuning trains its chosen language-model layers (unless the language model is frozen) plus
every unfrozen encoder-side tower in full; LoRA/OFT adapts the target layers of the unfrozen towers
only, so `lora_target: all` skips the vision tower and projector unless they are unfrozen.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.errors import ConfigError
from lf_models.args import ADAPTER_TYPES, FinetuningArguments, ModelArguments, check_multimodal_tuning
from lf_models.families import ModelFamily, family_for

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)
HEAD_NAMES = ("lm_head", "score", "v_head")
UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _refused_file(folder: str) -> str:
    """The `.bin` file of `folder` that torch refuses to unpickle (checked one by one: error path only)."""
    import torch

    files = sorted(Path(folder).glob("*.bin")) if Path(folder).is_dir() else []
    for path in files if len(files) > 1 else ():
        try:
            torch.load(path, map_location="meta", weights_only=True)
        except pickle.UnpicklingError:
            return str(path)
        except Exception:  # another problem: not the file torch refused
            continue
    return str(files[0]) if files else f"a .bin file of {folder!r}"


@contextmanager
def refuse_pickled_weights(folder: str, what: str) -> Iterator[None]:
    """One line naming the file when torch's `weights_only` refuses a `.bin` pickle: unpickling it
    could run code, so LF never loads it and says what to use instead."""
    try:
        yield
    except pickle.UnpicklingError as err:
        found = UNSAFE_GLOBAL.search(str(err))
        why = f"it imports {found.group(1)}" if found else "it is not a plain tensor file"
        raise ConfigError(f"{_refused_file(folder)}: refused to load the {what}: {why}, and unpickling it could run "
                          "code. Use a .safetensors copy from a source you trust (or convert a copy you trust "
                          "with safetensors).") from None


def find_all_linear_modules(model: Any) -> list[str]:
    """Names (last component) of the layers `lora_target: all` adapts: the family's list when it
    has one, else every linear layer except the output head."""
    import torch

    family = family_for(model.config)
    if family is not None and family.lora_targets:
        return sorted(family.lora_targets)
    head = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if module is head or name.split(".")[-1] in HEAD_NAMES:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt"):
            names.add(name.split(".")[-1])
    return sorted(names)


def lora_targets(model: Any, targets: list[str], key: str = "lora_target") -> list[str]:
    if targets == ["all"]:
        return find_all_linear_modules(model)
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ConfigError(f"{key} names {missing} that this model does not have; its linear layers are "
                          f"{', '.join(find_all_linear_modules(model))} (or use {key}: all).")
    return targets


def adapter_targets(finetuning_args: FinetuningArguments) -> tuple[str, list[str]]:
    """(the key, its module names) that choose where the adapter goes: lora_target or oft_target."""
    if finetuning_args.finetuning_type == "oft":
        return "oft_target", finetuning_args.oft_target or ["all"]
    return "lora_target", finetuning_args.lora_target or ["all"]


def check_lora_target(model_args: ModelArguments, finetuning_args: FinetuningArguments) -> None:
    """Module names in lora_target (oft_target for OFT) that the model lacks, found on an empty
    (meta-device) copy built from a local folder's config.json: an error before any weight loads.
    Other references are checked when the model loads."""
    key, targets = adapter_targets(finetuning_args)
    folder = Path(model_args.model_name_or_path or "").expanduser()
    if finetuning_args.finetuning_type not in ADAPTER_TYPES or targets == ["all"] \
            or not (folder / "config.json").is_file():
        return
    import torch
    from transformers import AutoConfig

    from lf_models.families import model_class_for

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=model_args.trust_remote_code)
        with torch.device("meta"):
            empty = model_class_for(config).from_config(config, trust_remote_code=model_args.trust_remote_code)
    except Exception:  # noqa: BLE001 - an unusual config: the loader checks the names on the real model
        return
    lora_targets(empty, targets, key)
    family = tower_family(empty)
    if family is not None and not finetuning_args.use_llama_pro:  # names that lie in frozen towers only
        tower_targets(empty, family, targets, finetuning_args, key)


def decoder_layers(model: Any) -> nn.ModuleList:
    """The list of decoder layers: the family's path, else the ModuleList of num_hidden_layers."""
    import torch

    family = family_for(model.config)
    if family is not None:
        module = model
        try:
            for part in family.layers.split("."):
                module = getattr(module, part)
            return module
        except AttributeError:
            pass
    count = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__} for freeze tuning; "
                      "use finetuning_type: lora or full.")


def llama_pro_layers(count: int, expanded: int) -> range:
    """The indices of the blocks `lf expand` added: with `expanded` new blocks among `count`, one
    closes every stride = count / expanded layers (LLaMA Pro's rule, as in LlamaFactory)."""
    if expanded <= 0 or count % expanded:
        raise ConfigError(f"use_llama_pro: the model has {count} layers, which is not a multiple of "
                          f"freeze_trainable_layers={expanded}; set it to the num_expand given to `lf expand`.")
    stride = count // expanded
    return range(stride - 1, count, stride)


def setup_freeze(model: Any, args: FinetuningArguments) -> None:
    """Train the last (or first) N decoder layers (LLaMA Pro: the N expanded blocks), or only some
    of their modules, and extras."""
    layers = decoder_layers(model)
    n = args.freeze_trainable_layers
    if abs(n) > len(layers):
        raise ConfigError(f"freeze_trainable_layers={n} but the model has {len(layers)} layers.")
    if args.use_llama_pro:
        chosen = llama_pro_layers(len(layers), n)
    else:
        chosen = range(len(layers) - n, len(layers)) if n > 0 else range(-n)
    model.requires_grad_(False)
    modules = args.freeze_trainable_modules
    for index in chosen:
        layer = layers[index]
        if modules == ["all"]:
            layer.requires_grad_(True)
            continue
        named = [(name.split(".")[-1], m) for name, m in layer.named_modules() if name]
        missing = [m for m in modules if m not in {n for n, _ in named}]
        if missing:
            raise ConfigError(f"freeze_trainable_modules {missing} are not in the decoder layers; they have "
                              f"{', '.join(sorted(n for n, _ in layer.named_children()))}.")
        for name, module in named:  # every match: MoE layers repeat names across experts
            if name in modules:
                module.requires_grad_(True)
    for name in args.freeze_extra_modules or []:
        found = [m for full, m in model.named_modules() if full.split(".")[-1] == name]
        if not found:
            top = sorted({full.split(".")[-1] for full, m in model.named_modules()
                          if full and not re.search(r"\.\d+(\.|$)", full)})
            raise ConfigError(f"freeze_extra_modules names {name!r}, which the model does not have; "
                              f"candidates: {', '.join(top)}.")
        for module in found:
            module.requires_grad_(True)
    logger.info("freeze tuning: training layers %s%s", list(chosen),
                f" ({', '.join(modules)})" if modules != ["all"] else "")


def expanded_targets(model: Any, targets: list[str], expanded: int) -> list[str]:
    """LLaMA Pro with an adapter: the full names of the target modules inside the expanded blocks."""
    layers = decoder_layers(model)
    prefix = next(name for name, module in model.named_modules() if module is layers)
    names = []
    for index in llama_pro_layers(len(layers), expanded):
        names += [f"{prefix}.{index}.{name}" for name, _ in layers[index].named_modules()
                  if name and name.split(".")[-1] in targets]
    return names


# -- multimodal towers -------------------------------------------------------------------------------
FROZEN_BY = {"vision_tower": "freeze_vision_tower", "projector": "freeze_multi_modal_projector",
             "language_model": "freeze_language_model"}
"""Each tower of `ModelFamily.towers` and the key that freezes it."""


def tower_family(model: Any) -> ModelFamily | None:
    """The model's family when it is multimodal with known towers (None for a text model)."""
    family = family_for(getattr(model, "config", None))
    return family if family is not None and family.vlm and family.towers else None


def tower_of(name: str, towers: Any) -> str | None:
    """The tower a module or parameter name lies in: the one with the longest matching path, so a
    projector nested in the vision model (Qwen2-VL's `model.visual.merger`) is the projector."""
    found, length = None, -1
    for tower, paths in towers.items():
        for path in paths:
            if (name == path or name.startswith(path + ".")) and len(path) > length:
                found, length = tower, len(path)
    return found


def frozen_towers(args: FinetuningArguments) -> set[str]:
    return {tower for tower, key in FROZEN_BY.items() if getattr(args, key)}


def _check_towers(model: Any, args: FinetuningArguments) -> ModelFamily | None:
    """The tower family, after refusing the multimodal keys on a text model (the config at hand now)
    and full/freeze tuning of a multimodal model whose towers LF does not know (its vision tower
    would train although freeze_vision_tower says otherwise)."""
    family = family_for(getattr(model, "config", None))
    kind = getattr(getattr(model, "config", None), "model_type", None)
    check_multimodal_tuning(kind, family, args, kind or type(model).__name__)
    if family is not None and family.vlm and not family.towers and args.finetuning_type in ("full", "freeze"):
        raise ConfigError(f"finetuning_type {args.finetuning_type} of a {kind} model needs to know its vision tower "
                          "(freeze_vision_tower: true keeps it frozen), which LF does not for this family yet; use "
                          "finetuning_type: lora.")
    return tower_family(model)


def freeze_towers(model: Any, args: FinetuningArguments, family: ModelFamily) -> None:
    """Full and freeze tuning: the frozen towers stop training; in freeze tuning the unfrozen
    encoder-side towers (vision tower, projector) train in full beside the chosen layers."""
    frozen = frozen_towers(args)
    for name, param in model.named_parameters():
        tower = tower_of(name, family.towers)
        if tower in frozen:
            param.requires_grad_(False)
        elif args.finetuning_type == "freeze" and tower in ("vision_tower", "projector"):
            param.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("the freeze_* keys leave nothing to train in this model; unfreeze a tower.")
    logger.info("multimodal towers frozen: %s", ", ".join(sorted(frozen)) or "none")


def _linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt")


def tower_targets(model: Any, family: ModelFamily, names: list[str] | None, args: FinetuningArguments,
                  key: str) -> list[str]:
    """The full names of the modules an adapter goes on in a multimodal model: the target names
    (None: `all`) inside the towers that are not frozen. `all` is the family's language-model
    targets plus every linear layer of an unfrozen vision tower or projector; the output head never."""
    frozen = frozen_towers(args)
    head = model.get_output_embeddings()
    language = set(family.lora_targets)
    chosen, blocked = [], []
    for name, module in model.named_modules():
        last = name.split(".")[-1]
        tower = tower_of(name, family.towers)
        if names is None:
            if module is head or last in HEAD_NAMES or not _linear(module):
                continue
            if tower in ("language_model", None) and language and last not in language:
                continue
        elif last not in names:
            continue
        (blocked if tower in frozen else chosen).append(name)
    if not chosen:
        which = "; ".join(f"{k}: {str(getattr(args, k)).lower()}" for k in FROZEN_BY.values())
        named = f"{key} {', '.join(names)} names modules of frozen towers only" if names and blocked else \
            f"{key} finds no module to adapt"
        raise ConfigError(f"{named} ({which}); unfreeze the tower to adapt, or name other modules.")
    return chosen


def adapter_config(model: Any, args: FinetuningArguments) -> Any:
    """The peft config of a fresh LoRA or OFT adapter."""
    from peft import LoraConfig, OFTConfig, TaskType

    key, names = adapter_targets(args)
    targets = lora_targets(model, names, key)
    family = tower_family(model)
    if args.use_llama_pro:
        targets = expanded_targets(model, targets, args.freeze_trainable_layers)
        if family is not None:
            targets = [t for t in targets if tower_of(t, family.towers) not in frozen_towers(args)]
    elif family is not None:
        targets = tower_targets(model, family, None if names == ["all"] else targets, args, key)
    if args.finetuning_type == "oft":
        return OFTConfig(task_type=TaskType.CAUSAL_LM, r=args.oft_rank, oft_block_size=args.oft_block_size,
                         module_dropout=args.module_dropout, target_modules=targets,
                         modules_to_save=args.additional_target)
    init: bool | str = True
    if args.pissa_init:
        init = "pissa" if args.pissa_iter == -1 else f"pissa_niter_{args.pissa_iter}"
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=args.additional_target,
        use_rslora=args.use_rslora,
        use_dora=args.use_dora,
        init_lora_weights=init,
    )


def attach_lora(model: Any, model_args: ModelArguments, args: FinetuningArguments, is_trainable: bool) -> Any:
    """Merge earlier adapters (LoRA or OFT: peft reads each one's type from its adapter_config.json),
    then continue the last one or create a fresh one (finetuning_type) for training."""
    adapters = list(model_args.adapter_name_or_path or [])
    if not adapters and not is_trainable:  # inference on the base: peft (which imports bitsandbytes) stays out
        return model
    from peft import PeftModel, get_peft_model

    quantized = getattr(model, "is_quantized", False)
    if adapters and quantized and not is_trainable:  # cannot merge into quantised weights: apply on top
        if len(adapters) > 1:
            raise ConfigError("a quantised model takes one adapter at a time (adapters cannot be merged into it).")
        with refuse_pickled_weights(adapters[0], "adapter"):
            return PeftModel.from_pretrained(model, adapters[0])
    resume = adapters[-1] if (adapters and is_trainable and not args.create_new_adapter) else None
    to_merge = adapters[:-1] if resume else adapters
    if to_merge and quantized:
        raise ConfigError("adapters cannot be merged into a quantised model; train on top of one adapter only, "
                          "or drop quantization_bit.")
    for path in to_merge:
        with refuse_pickled_weights(path, "adapter"):
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
    if to_merge:
        logger.info("merged %d adapter(s): %s", len(to_merge), ", ".join(to_merge))
    if resume is not None:
        logger.info("continuing training of adapter %s", resume)
        with refuse_pickled_weights(resume, "adapter"):
            return PeftModel.from_pretrained(model, resume, is_trainable=True)
    if not is_trainable:
        return model
    return get_peft_model(model, adapter_config(model, args))


def setup_finetuning(model: Any, model_args: ModelArguments, args: FinetuningArguments, is_trainable: bool) -> Any:
    family = _check_towers(model, args) if is_trainable else None
    if args.finetuning_type in ADAPTER_TYPES:
        return attach_lora(model, model_args, args, is_trainable)
    if not is_trainable:
        model.requires_grad_(False)
        return model
    if args.finetuning_type == "freeze":
        setup_freeze(model, args)
    else:
        model.requires_grad_(True)
    if family is not None:
        freeze_towers(model, args, family)
    return model
