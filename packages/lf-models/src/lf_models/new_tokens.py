"""New tokens: LlamaFactory's `add_tokens`, `add_special_tokens`, `new_special_tokens_config` and
`init_special_tokens` (plus LF's own `new_special_tokens` and `resize_vocab`).

Tokens are added to the tokenizer when it loads; the embeddings grow to the tokenizer when the model
loads, and each new row is initialised:

- `noise_init`: the mean of the existing rows plus Gaussian noise of std 1/sqrt(hidden size), so a
  new token starts as an ordinary one instead of a random vector the model has never seen;
- `desc_init`: the mean of the rows of the tokens its description (from `new_special_tokens_config`)
  tokenises into, so `<think>` described as "start of the reasoning" starts near those words;
- `desc_init_w_noise`: the same plus that noise (new tokens with similar descriptions stay apart).

Each matrix is initialised from its own rows: input embeddings from input rows, and an untied output
head from its own rows (a new token's first logit is then the mean of its description words' logits).
The run folder saves the grown tokenizer, so `lf chat`/`lf export` on the run see the same ids; a
base model loaded under an adapter whose tokenizer is larger grows to it before the adapter loads.
This module imports torch only inside the functions that touch a model.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from lf_data.errors import ConfigError

logger = logging.getLogger(__name__)
NOISE_SEED = 0


def read_token_descriptions(path: str) -> dict[str, str]:
    """`new_special_tokens_config`: a YAML mapping of each new token to its description, in order."""
    import yaml

    file = Path(path).expanduser()
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"new_special_tokens_config {path!r} cannot be read ({err.strerror or err}); give a YAML "
                          "file that maps each new token to its description.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"new_special_tokens_config {path!r} is not valid YAML "
                          f"({str(err).splitlines()[0]}).") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"new_special_tokens_config {path!r} must map each new token to a description, for "
                          "example `<think>: the start of the reasoning`.")
    bad = [repr(k) for k, v in data.items() if not isinstance(k, str) or not k.strip() or not isinstance(v, str)]
    if bad:
        raise ConfigError(f"new_special_tokens_config {path!r}: {', '.join(bad[:3])} must be a token (text) mapped to "
                          "a description (text).")
    return {key.strip(): value for key, value in data.items()}


def special_tokens(model_args: Any) -> tuple[list[str], dict[str, str]]:
    """The special tokens to add and their descriptions: the config file's keys when it is given (it
    takes precedence over add_special_tokens, as in LlamaFactory), else add_special_tokens."""
    if model_args.new_special_tokens_config:
        descriptions = read_token_descriptions(model_args.new_special_tokens_config)
        if model_args.add_special_tokens:
            logger.warning("new_special_tokens_config replaces add_special_tokens: adding %s",
                           ", ".join(descriptions))
        return list(descriptions), descriptions
    return list(model_args.add_special_tokens or []), {}


def adds_tokens(model_args: Any) -> bool:
    """Whether the config asks for tokens the tokenizer may not have yet."""
    return bool(model_args.add_tokens or model_args.add_special_tokens or model_args.new_special_tokens_config
                or model_args.new_special_tokens)


def add_new_tokens(tokenizer: Any, model_args: Any) -> int:
    """Add the requested tokens to `tokenizer` (each becomes one id; tokens it already has are kept)."""
    added = 0
    if model_args.new_special_tokens:  # LF's key: also listed among the tokenizer's additional special tokens
        added += tokenizer.add_special_tokens({"additional_special_tokens": model_args.new_special_tokens},
                                              replace_extra_special_tokens=False)
    if model_args.add_tokens:
        added += tokenizer.add_tokens(list(model_args.add_tokens), special_tokens=False)
    special, _ = special_tokens(model_args)
    if special:
        added += tokenizer.add_tokens(special, special_tokens=True)
    if added:
        logger.info("added %d token(s) to the tokenizer", added)
    return added


def resize_for_new_tokens(model: Any, tokenizer: Any, model_args: Any) -> bool:
    """Grow the embeddings to the tokenizer when tokens were asked for, `resize_vocab` is set, or an
    adapter's saved tokenizer is larger than the base (it was trained with new tokens); initialise the
    new rows as `init_special_tokens` says. Returns whether the embeddings grew."""
    from lf_models.patches import resize_embeddings

    old = model.get_input_embeddings().weight.shape[0]
    wanted = adds_tokens(model_args) or model_args.resize_vocab or bool(model_args.adapter_name_or_path)
    if not wanted or len(tokenizer) <= old:
        return False
    resize_embeddings(model, tokenizer)  # every new row: mean + noise (noise_init)
    _, descriptions = special_tokens(model_args)
    if descriptions and model_args.init_special_tokens in ("desc_init", "desc_init_w_noise"):
        init_from_descriptions(model, tokenizer, descriptions, old,
                               noise=model_args.init_special_tokens == "desc_init_w_noise")
    return True


def init_from_descriptions(model: Any, tokenizer: Any, descriptions: dict[str, str], old_rows: int,
                           noise: bool) -> list[int]:
    """Set each described new token's rows to the mean of its description's token rows (ids below
    `old_rows`; the mean of all old rows when none is left), plus noise of std 1/sqrt(hidden size)
    when `noise`. Returns the ids set."""
    import torch

    matrices = {id(m): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())
                if m is not None and getattr(m, "weight", None) is not None
                and m.weight.shape[0] == len(tokenizer)}.values()
    generator = torch.Generator().manual_seed(NOISE_SEED + 1)
    done = []
    for token, description in descriptions.items():
        token_id = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int) or token_id < old_rows:
            continue  # the tokenizer had it already: its trained row stays
        ids = [i for i in tokenizer(description, add_special_tokens=False)["input_ids"] if i < old_rows]
        if not ids:
            logger.warning("the description of %s has no known token; it starts from the mean row", token)
        with torch.no_grad():
            for weight in matrices:
                base = weight[ids].mean(dim=0) if ids else weight[:old_rows].mean(dim=0)
                if noise:
                    base = base + (torch.randn(weight.shape[1], generator=generator)
                                   / math.sqrt(weight.shape[1])).to(weight.dtype)
                weight[token_id] = base.to(weight.dtype)
        done.append(token_id)
    logger.info("initialised %d new token(s) from their descriptions%s", len(done), " plus noise" if noise else "")
    return done
