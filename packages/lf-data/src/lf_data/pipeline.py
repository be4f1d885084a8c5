"""From a data config and a tokenizer to the tokenised dataset a stage trains on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lf_data.args import DataArguments
from lf_data.errors import ConfigError, DataError
from lf_data.loading import load_aligned
from lf_data.supervised import IGNORE_INDEX, tokenize_supervised
from lf_data.templates import get_template

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)


def build_supervised_dataset(data_args: DataArguments, tokenizer: Any) -> Dataset:
    if not data_args.dataset:
        raise ConfigError("no `dataset` given: name one or more datasets from dataset_info.json "
                          "(for example dataset: identity).")
    template = get_template(data_args.template)
    aligned = load_aligned(data_args.dataset, data_args.dataset_dir, data_args.max_samples,
                           data_args.preprocessing_num_workers)
    tokenized = aligned.map(
        tokenize_supervised, batched=True, remove_columns=aligned.column_names,
        num_proc=data_args.preprocessing_num_workers, desc="Tokenising",
        fn_kwargs={"template": template, "tokenizer": tokenizer, "cutoff_len": data_args.cutoff_len,
                   "train_on_prompt": data_args.train_on_prompt, "mask_history": data_args.mask_history},
    )
    trainable = tokenized.filter(lambda labels: any(t != IGNORE_INDEX for t in labels), input_columns="labels")
    dropped = len(tokenized) - len(trainable)
    if dropped:
        logger.warning("dropped %d of %d examples with no trainable tokens left after cutoff_len=%d",
                       dropped, len(tokenized), data_args.cutoff_len)
    if len(trainable) == 0:
        raise DataError(f"no example of {', '.join(data_args.dataset)} has a trainable token left "
                        f"after truncation to cutoff_len={data_args.cutoff_len}; raise cutoff_len.")
    return trainable
