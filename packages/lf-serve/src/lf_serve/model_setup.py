"""What every engine resolves the same way: the model folder, the tokenizer, the chat template
(the one the adapter was trained with when there is one), eos ids and the served name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lf_data.run_folder import resolve_template
from lf_serve.args import ServePlan

logger = logging.getLogger(__name__)


@dataclass
class ModelSetup:
    source: Any  # lf_models.loader.ModelSource
    tokenizer: Any
    template: Any
    tool_format: str | None
    eos_ids: set[int]


def setup_model(plan: ServePlan) -> ModelSetup:
    from lf_data.templates import Template, get_template, with_options
    from lf_models.loader import ModelSource, load_tokenizer, resolve_model

    source = resolve_model(plan.model)
    adapters = plan.model.adapter_name_or_path or []
    tokenizer_source = source
    if adapters and (Path(adapters[-1]) / "tokenizer_config.json").is_file():
        tokenizer_source = ModelSource(str(adapters[-1]))  # the tokenizer the adapter was trained with
    tokenizer = load_tokenizer(plan.model, tokenizer_source)
    template = with_options(get_template(resolve_template(plan.data.template, adapters, source.default_template)),
                            plan.data)
    logger.info("chat template: %s", template.name)
    eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for word in getattr(template, "stop_words", ()):
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) == 1:
            eos_ids.add(ids[0])
    tool_format = template.tool_format if isinstance(template, Template) else None  # None: try every format
    return ModelSetup(source, tokenizer, template, tool_format, eos_ids)
