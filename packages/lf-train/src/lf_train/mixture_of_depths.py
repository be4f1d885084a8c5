"""Mixture-of-Depths (Raposo et al., arXiv 2404.02258): every other decoder layer gets a router, a
linear map from each token's hidden state to a scalar score; per sequence only the top
capacity x length tokens (12.5%, the paper's setting) go through the layer, the others skip it on
the residual stream. A routed token's layer update is multiplied by its score, which puts the
router on the gradient path:  x' = x + r * (layer(x) - x)  for routed tokens,  x' = x  otherwise.

LF implements the router itself: the `mixture-of-depth` package (import name MoD) does not import
under transformers 5 (its modeling folder imports the removed TRANSFORMERS_CACHE), and its generic
`apply_mod_to_hf`, loaded from its file, calls decoder layers with transformers 4's arguments
(past_key_value, output_attentions), passes the whole sequence's rotary embeddings with the routed
subset and expects tuple outputs, so the first forward pass fails with a TypeError.

The routed layers keep their parameter names (the router is `<layer>.mod_router.weight`) and the
model's config.json records the routing (`mixture_of_depths`), so `mixture_of_depths: load` rebuilds
the same routing on a saved run and loads its routers. Routing is non-causal (top-k over the whole
sequence, as in the paper's training setup); generation step by step with it is not supported, and a
plain transformers load of the saved model ignores the routers and runs every layer densely.

This module imports torch only inside functions: `check_mixture_of_depths` runs when a config is checked.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from lf_data.errors import ConfigError

logger = logging.getLogger(__name__)
CAPACITY = 0.125
"""Share of each sequence's tokens a routed layer processes (the paper's best setting)."""
CONFIG_KEY = "mixture_of_depths"
"""config.json entry that records the routing: {"capacity": ..., "layers": [...]}."""
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "gemma", "phi", "phi3", "starcoder2", "qwen2",
                                   "qwen3"})
"""Model types whose decoder layers take (hidden_states, attention_mask, position_ids, past_key_values,
use_cache, position_embeddings) and return the new hidden states, which routing relies on."""


def _read_config(path: str | None) -> dict[str, Any] | None:
    config = Path(path or "").expanduser() / "config.json"
    return json.loads(config.read_text(encoding="utf-8")) if config.is_file() else None


def check_mixture_of_depths(mode: str, model_args: Any, finetuning_type: str) -> None:
    """Cheap checks before anything loads (no torch)."""
    if finetuning_type in ("lora", "oft"):
        raise ConfigError("mixture_of_depths adds router weights that an adapter does not save; use "
                          "finetuning_type: full or freeze.")
    config = _read_config(model_args.model_name_or_path)
    if config is None:
        if mode == "load":
            raise ConfigError("mixture_of_depths: load needs model_name_or_path to be the output_dir of an earlier "
                              "`mixture_of_depths: convert` run.")
        return  # a hub model: its type is checked once it loads
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"mixture_of_depths does not support model type {model_type!r}; it supports "
                          f"{', '.join(sorted(SUPPORTED_MODEL_TYPES))}.")
    if mode == "load" and CONFIG_KEY not in config:
        raise ConfigError(f"mixture_of_depths: load, but {model_args.model_name_or_path!r} is not a Mixture-of-Depths "
                          "model (no mixture_of_depths in its config.json); use mixture_of_depths: convert.")
    if mode == "convert" and CONFIG_KEY in config:
        raise ConfigError(f"{model_args.model_name_or_path!r} is already a Mixture-of-Depths model; use "
                          "mixture_of_depths: load to continue training it.")


def _decoder_layers(model: Any) -> Any:
    import torch

    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList) and len(module):
            return module
    raise ConfigError("mixture_of_depths found no decoder layers (a `layers` list) in this model.")


def _subset_mask(mask: Any, index: Any) -> Any:
    """The attention mask among the routed tokens (their order is kept, so it stays causal); every
    routed token sees at least itself, so no softmax row is empty."""
    import torch

    if mask is None:
        return None
    if not torch.is_tensor(mask):
        raise ConfigError("mixture_of_depths works with the eager, sdpa and flash-attention masks; set "
                          "attn_implementation to one of those.")
    if mask.dim() == 2:  # flash attention's padding mask
        return mask.gather(1, index)
    batch, k = index.shape
    mask = mask.expand(batch, -1, -1, -1)
    if mask.size(-1) != mask.size(-2):
        raise RuntimeError("Mixture-of-Depths routes whole sequences; generating token by token with it is not "
                           "supported.")
    heads = mask.size(1)
    rows = mask.gather(2, index[:, None, :, None].expand(-1, heads, -1, mask.size(-1)))
    sub = rows.gather(3, index[:, None, None, :].expand(-1, heads, k, -1))
    eye = torch.eye(k, dtype=torch.bool, device=sub.device)
    return sub | eye if sub.dtype == torch.bool else sub.masked_fill(eye, 0.0)


class RoutedLayerMixin:
    """Placed in front of a decoder layer's class: routes the top tokens through the layer."""

    mod_capacity: float

    def forward(self, hidden_states: Any, attention_mask: Any = None, position_ids: Any = None,
                past_key_values: Any = None, use_cache: bool | None = False, position_embeddings: Any = None,
                **kwargs: Any) -> Any:
        batch, length, width = hidden_states.shape
        k = max(1, math.ceil(self.mod_capacity * length))
        scores = self.mod_router(hidden_states).squeeze(-1)  # [batch, length]
        index = scores.float().topk(k, dim=-1).indices.sort(dim=-1).values  # routed tokens, in order

        def pick(tensor: Any) -> Any:
            tensor = tensor.expand(batch, *tensor.shape[1:])
            return tensor.gather(1, index[..., None].expand(-1, -1, tensor.size(-1)))

        routed = pick(hidden_states)
        out = super().forward(  # type: ignore[misc]
            routed, attention_mask=_subset_mask(attention_mask, index),
            position_ids=position_ids.expand(batch, -1).gather(1, index) if position_ids is not None else index,
            past_key_values=past_key_values, use_cache=use_cache,
            position_embeddings=tuple(pick(t) for t in position_embeddings) if position_embeddings is not None else None,
            **kwargs)
        if isinstance(out, tuple):
            out = out[0]
        update = (out - routed) * scores.gather(1, index)[..., None].to(out.dtype)
        return hidden_states.scatter_add(1, index[..., None].expand(-1, -1, width), update.to(hidden_states.dtype))


def convert_to_mixture_of_depths(model: Any, capacity: float = CAPACITY, layers: list[int] | None = None) -> list[int]:
    """Add a router to every other decoder layer (the second, fourth, ...) in place; returns their indices."""
    import torch

    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"mixture_of_depths does not support model type {model_type!r}; it supports "
                          f"{', '.join(sorted(SUPPORTED_MODEL_TYPES))}.")
    decoder = _decoder_layers(model)
    layers = list(range(1, len(decoder), 2)) if layers is None else layers
    for i in layers:
        layer = decoder[i]
        weight = next(layer.parameters())
        layer.mod_router = torch.nn.Linear(model.config.hidden_size, 1, bias=False, device=weight.device,
                                           dtype=weight.dtype)
        layer.mod_capacity = capacity
        layer.__class__ = type(f"MoD{type(layer).__name__}", (RoutedLayerMixin, type(layer)), {})
    model.config.mixture_of_depths = {"capacity": capacity, "layers": layers}
    return layers


def _load_routers(model: Any, folder: str) -> None:
    from safetensors import safe_open

    params = {name: param for name, param in model.named_parameters() if ".mod_router." in name}
    found = set()
    for file in sorted(Path(folder).expanduser().glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key in params:
                    params[key].data.copy_(weights.get_tensor(key))
                    found.add(key)
    missing = sorted(set(params) - found)
    if missing:
        raise ConfigError(f"mixture_of_depths: load found no saved router for {missing[0]} in {folder!r}; it was "
                          "not saved by a `mixture_of_depths: convert` run of LF.")


def prepare_mixture_of_depths(model: Any, mode: str, model_path: str | None) -> None:
    """`convert`: route the loaded model; `load`: rebuild the routing the saved model records and load
    its routers (a plain load drops them). Either way the saved model's config.json records it."""
    recorded = getattr(model.config, CONFIG_KEY, None)
    if mode == "load":
        if not recorded:
            raise ConfigError(f"mixture_of_depths: load, but {model_path!r} records no Mixture-of-Depths routing; "
                              "use mixture_of_depths: convert.")
        convert_to_mixture_of_depths(model, recorded["capacity"], list(recorded["layers"]))
        _load_routers(model, str(model_path))
    else:
        layers = convert_to_mixture_of_depths(model)
        logger.info("Mixture-of-Depths: layers %s route %g of each sequence's tokens", layers, CAPACITY)
