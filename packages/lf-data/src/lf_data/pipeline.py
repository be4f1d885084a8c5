"""From a data config, a stage and a tokenizer to the tokenised train (and eval) datasets.

Order: check names and options (cheap) -> reuse a cached result for identical inputs -> load and
align every row, refusing invalid rows unless `skip_invalid` -> tokenise for the stage -> drop rows
with nothing to train on (counted) -> pack if asked -> cache atomically -> split off `val_size`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.aligner import PLACEHOLDERS
from lf_data.args import DataArguments
from lf_data.cache import cache_key, cache_root, load_cached, save_cached
from lf_data.dataset_info import get_dataset_attr
from lf_data.errors import ConfigError, DataError
from lf_data.loading import load_aligned, non_empty
from lf_data.processors import PROCESSORS, Context
from lf_data.processors.packing import pack
from lf_data.templates import get_template

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)
PACKABLE = ("pt", "sft")
PACK_BATCH = 10_000


@dataclass
class DataReport:
    """What happened to the rows: read, invalid (with the first problems), dropped, kept."""

    rows_read: int | None = None
    invalid: int = 0
    errors: list[str] = field(default_factory=list)
    dropped: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    kept: int | None = None
    cache: str = "off"  # "hit", "written" or "off"
    cache_path: str | None = None


@dataclass
class DatasetModule:
    train_dataset: Any
    eval_dataset: Any | None
    report: DataReport
    template: Any


def _options(data_args: DataArguments, stage: str, names: list[str]) -> dict[str, Any]:
    skip = {"preprocessing_num_workers", "overwrite_cache", "tokenized_path", "eval_dataset", "val_size",
            "dataset", "streaming", "buffer_size"}
    options = {k: v for k, v in dataclasses.asdict(data_args).items() if k not in skip}
    return {**options, "stage": stage, "datasets": names}


def check_stage_data(data_args: DataArguments, stage: str, names: list[str]) -> None:
    """Refuse a stage/data combination that cannot work, before reading any row."""
    if stage not in PROCESSORS:
        raise ConfigError(f"no preprocessing for stage {stage!r}; stages: {', '.join(PROCESSORS)}.")
    if data_args.packing and stage not in PACKABLE:
        raise ConfigError(f"packing works for the pt and sft stages, not {stage!r}; remove packing/neat_packing.")
    needs = PROCESSORS[stage].needs
    for name in names:
        attr = get_dataset_attr(name, data_args.dataset_dir)
        if needs == "ranking" and not attr.ranking:
            raise ConfigError(f"stage {stage} needs preference data (chosen/rejected pairs) but {attr} is not "
                              "marked `\"ranking\": true` in dataset_info.json.")
        if needs != "ranking" and attr.ranking and stage != "pt":
            raise ConfigError(f"{attr} is preference data (ranking); use it with stage rm, dpo, orpo or simpo.")
        if needs == "kto_tag" and not attr.columns.get("kto_tag"):
            raise ConfigError(f"stage kto needs a desirable/undesirable tag per row: map it with "
                              f"`\"columns\": {{\"kto_tag\": ...}}` in the entry of {attr}.")


MEDIA_CUT = "a media placeholder was cut off by cutoff_len"
REPORTED = ("rows_read", "invalid", "errors", "dropped", "drop_reasons", "kept")


def _tokenize(batch: dict[str, list[Any]], ctx: Context, processor: Any) -> dict[str, list[Any]]:
    out = processor.tokenize(batch, ctx)
    size = len(next(iter(out.values()))) if out else 0
    out["_drop"] = ["" if processor.keep({key: values[i] for key, values in out.items()}) else processor.drop_reason
                    for i in range(size)]
    if size == len(batch["_prompt"]):  # one output per row (all stages but packed pt): check media survived
        ids_column = "input_ids" if "input_ids" in out else "chosen_input_ids"
        for i in range(size):
            for kind, placeholder in PLACEHOLDERS.items():
                media = batch[f"_{kind}"][i]
                if media and not out["_drop"][i] and \
                        ctx.tokenizer.decode(out[ids_column][i]).count(placeholder) != len(media):
                    out["_drop"][i] = MEDIA_CUT
    return out


def _cache_location(names: list[str], data_args: DataArguments, stage: str, template: Any, tokenizer: Any,
                    packing: bool) -> tuple[Path | None, str | None]:
    """(where the tokenised result lives, its content key); no cache when streaming.

    `tokenized_path` keeps LlamaFactory's meaning: load it if it is there, else save there.
    """
    if data_args.streaming:
        return None, None
    if data_args.tokenized_path:
        return Path(data_args.tokenized_path), None
    attrs = [get_dataset_attr(name, data_args.dataset_dir) for name in names]
    hub = {a.name: f"{a.location}|{a.subset}|{a.split}|{a.folder}" for a in attrs if a.source != "file"}
    key = cache_key(attrs, tokenizer, template, {**_options(data_args, stage, names), "packing": packing}, hub)
    return cache_root() / key, key


def _prepare(names: list[str], data_args: DataArguments, stage: str, template: Any, tokenizer: Any,
             report: DataReport) -> Dataset:
    processor = PROCESSORS[stage]
    packing = data_args.packing if data_args.packing is not None else stage == "pt"
    ctx = Context(template=template, tokenizer=tokenizer, cutoff_len=data_args.cutoff_len,
                  train_on_prompt=data_args.train_on_prompt, mask_history=data_args.mask_history,
                  packing=packing, neat_packing=data_args.neat_packing, enable_thinking=data_args.enable_thinking)
    location, key = _cache_location(names, data_args, stage, template, tokenizer, packing)
    if location is not None and not data_args.overwrite_cache:
        cached = load_cached(location, key)
        if cached is not None:
            splits, meta = cached
            for name in REPORTED:
                setattr(report, name, meta.get(name))
            report.cache, report.cache_path = "hit", str(location)
            logger.info("reusing the tokenised dataset cached at %s%s", location,
                        " (tokenized_path: the data options are not applied again)" if key is None else "")
            return splits["train"]

    aligned = load_aligned(names, data_args.dataset_dir, max_samples=data_args.max_samples,
                           num_proc=data_args.preprocessing_num_workers, streaming=data_args.streaming,
                           mix_strategy=data_args.mix_strategy, interleave_probs=data_args.interleave_probs,
                           seed=data_args.seed, media_dir=data_args.media_dir, skip_invalid=data_args.skip_invalid,
                           needs_response=processor.needs_response)
    report.rows_read, report.invalid, report.errors = aligned.rows_read, aligned.invalid, aligned.errors
    if aligned.invalid and not data_args.skip_invalid:
        listed = "\n  ".join(aligned.errors)
        more = f"\n  ... and {aligned.invalid - len(aligned.errors)} more" if aligned.invalid > len(aligned.errors) else ""
        raise DataError(f"{aligned.invalid} invalid row(s) in {', '.join(names)}:\n  {listed}{more}\n"
                        "Fix them, or set skip_invalid: true to drop them.")
    if aligned.invalid:
        logger.warning("dropped %d invalid row(s) (skip_invalid: true)", aligned.invalid)

    dataset = aligned.dataset
    columns = list(next(iter(dataset)).keys()) if data_args.streaming else dataset.column_names
    extra = {} if data_args.streaming else {"num_proc": data_args.preprocessing_num_workers,
                                             "desc": f"Tokenising for {stage}"}
    tokenized = dataset.map(_tokenize, batched=True, remove_columns=columns,
                            fn_kwargs={"ctx": ctx, "processor": processor}, **extra)
    if data_args.streaming:
        kept = tokenized.filter(lambda drop: not drop, input_columns="_drop").remove_columns("_drop")
    else:
        from collections import Counter

        reasons = Counter(non_empty(tokenized, "_drop"))
        report.dropped, report.drop_reasons = sum(reasons.values()), dict(reasons)
        kept = tokenized.filter(lambda drop: not drop, input_columns="_drop") if report.dropped else tokenized
        kept = kept.remove_columns("_drop")
        for reason, count in reasons.items():
            logger.warning("dropped %d of %d examples: %s", count, len(tokenized), reason)
        if len(kept) == 0:
            raise DataError(f"no example of {', '.join(names)} is left to train on "
                            f"({'; '.join(reasons) or processor.drop_reason}); check the data and "
                            f"cutoff_len={data_args.cutoff_len}.")
    if packing and stage == "sft":
        kept = kept.map(pack, batched=True, batch_size=PACK_BATCH,
                        fn_kwargs={"cutoff_len": data_args.cutoff_len, "neat": data_args.neat_packing},
                        **({} if data_args.streaming else {"desc": "Packing"}))
    if not data_args.streaming:
        report.kept = len(kept)
        meta = {"key": key, **{name: getattr(report, name) for name in REPORTED}}
        save_cached(location, {"train": kept}, meta)
        kept = load_cached(location)[0]["train"]  # memory-mapped from the cache, like a cache hit
        report.cache, report.cache_path = "written", str(location)
    return kept


def build_dataset(data_args: DataArguments, tokenizer: Any, stage: str = "sft", template: Any = None) -> DatasetModule:
    """The train (and eval) datasets for a stage; `template` defaults to `data_args.template`."""
    if not data_args.dataset:
        raise ConfigError("no `dataset` given: name one or more datasets from dataset_info.json "
                          "(for example dataset: identity).")
    template = template if template is not None else get_template(data_args.template)
    check_stage_data(data_args, stage, data_args.dataset + (data_args.eval_dataset or []))
    report = DataReport()
    train = _prepare(data_args.dataset, data_args, stage, template, tokenizer, report)
    evaluation = None
    if data_args.eval_dataset:
        evaluation = _prepare(data_args.eval_dataset, data_args, stage, template, tokenizer, DataReport())
    if data_args.streaming:
        train = train.shuffle(buffer_size=data_args.buffer_size, seed=data_args.seed)
        if data_args.val_size:
            evaluation, train = train.take(int(data_args.val_size)), train.skip(int(data_args.val_size))
    elif data_args.val_size:
        size = int(data_args.val_size) if data_args.val_size >= 1 else data_args.val_size
        if isinstance(size, int) and size >= len(train):
            raise ConfigError(f"val_size={size} leaves no training rows ({len(train)} examples in all).")
        split = train.train_test_split(test_size=size, seed=data_args.seed)
        train, evaluation = split["train"], split["test"]
    return DatasetModule(train, evaluation, report, template)


def build_supervised_dataset(data_args: DataArguments, tokenizer: Any) -> Dataset:
    """The SFT training set alone (kept for callers that need nothing else)."""
    return build_dataset(data_args, tokenizer, "sft").train_dataset
