"""From a data config, a stage and a tokenizer to the tokenised train (and eval) datasets.

Order: check names and options (cheap) -> reuse a cached result for identical inputs -> load and
align every row, refusing invalid rows unless `skip_invalid` -> tokenise for the stage -> drop rows
with nothing to train on (counted) -> pack if asked -> cache atomically -> split off `val_size`.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.aligner import PLACEHOLDERS
from lf_data.args import DataArguments
from lf_data.cache import cache_key, cache_root, load_cached, save_cached
from lf_data.dataset_info import get_dataset_attr
from lf_data.errors import ConfigError, DataError
from lf_data.loading import HubCredentials, load_aligned, non_empty
from lf_data.processors import Context
from lf_data.processors.packing import pack
from lf_data.stages import DATA_STAGES
from lf_data.templates import get_template, with_options
from lf_data.tokenizer_threads import batch_threads

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)
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
    media: Any = None
    """lf_models.media.MediaInputs when the rows carry media for a multimodal model (set by lf train)."""


def _options(data_args: DataArguments, stage: str, names: list[str], markers: dict[str, str] | None = None
             ) -> dict[str, Any]:
    skip = {"preprocessing_num_workers", "overwrite_cache", "tokenized_path", "eval_dataset", "val_size",
            "dataset", "streaming", "buffer_size", "preprocessing_batch_size", "eval_on_each_dataset"}
    options = {k: v for k, v in dataclasses.asdict(data_args).items() if k not in skip}
    return {**options, "stage": stage, "datasets": names, **({"media_markers": markers} if markers else {})}


def check_stage_data(data_args: DataArguments, stage: str, names: list[str]) -> None:
    """Refuse a stage/data combination that cannot work, before reading any row."""
    if stage not in DATA_STAGES:
        raise ConfigError(f"no preprocessing for stage {stage!r}; stages: {', '.join(DATA_STAGES)}.")
    spec = DATA_STAGES[stage]
    if data_args.packing and not spec.packable:
        packable = " and ".join(name for name, s in DATA_STAGES.items() if s.packable)
        raise ConfigError(f"packing works for the {packable} stages, not {stage!r}; remove packing/neat_packing.")
    for name in names:
        attr = get_dataset_attr(name, data_args.dataset_dir)
        if spec.pairwise and not attr.ranking:
            raise ConfigError(f"stage {stage} needs preference data (chosen/rejected pairs) but {attr} is not "
                              "marked `\"ranking\": true` in dataset_info.json.")
        if not spec.pairwise and attr.ranking and not spec.plain_text:
            pairwise = " or ".join(n for n, s in DATA_STAGES.items() if s.pairwise)
            raise ConfigError(f"{attr} is preference data (ranking); use it with stage {pairwise} "
                              "(pref_loss chooses DPO, ORPO, SimPO...).")
        if spec.needs == "kto_tag" and not attr.columns.get("kto_tag"):
            raise ConfigError(f"stage kto needs a desirable/undesirable tag per row: map it with "
                              f"`\"columns\": {{\"kto_tag\": ...}}` in the entry of {attr}.")


MEDIA_CUT = "a media placeholder was cut off by cutoff_len"
REPORTED = ("rows_read", "invalid", "errors", "dropped", "drop_reasons", "kept")


def _tokenize(batch: dict[str, list[Any]], ctx: Context, processor: Any, carry_media: bool) -> dict[str, list[Any]]:
    """Aligned rows -> the stage's columns, `_drop` (why a row is dropped) and `_error` (invalid rows,
    passed through as blank rows so they are counted and listed)."""
    errors = batch["_error"]
    if any(errors):
        batch = {key: [v for v, e in zip(values, errors, strict=True) if not e] for key, values in batch.items()}
    out = processor.tokenize(batch, ctx)
    size = len(out[processor.columns[0]])
    out["_drop"] = ["" if processor.keep({key: values[i] for key, values in out.items()}) else processor.drop_reason
                    for i in range(size)]
    if size == len(batch["_prompt"]):  # one output per row (all stages but packed pt): check media survived
        ids_column = processor.columns[0]
        for i in range(size):
            for kind, placeholder in PLACEHOLDERS.items():
                media = batch[f"_{kind}"][i]
                written = (ctx.media_markers or {}).get(kind, placeholder)  # a multimodal model's marker
                if media and not out["_drop"][i] and \
                        ctx.tokenizer.decode(out[ids_column][i]).count(written) != len(media):
                    out["_drop"][i] = MEDIA_CUT
        if carry_media:  # for the model's processor (images, videos, audios as JSON lists of paths)
            for kind in PLACEHOLDERS:
                out[kind] = [json.dumps(media) if media else "" for media in batch[f"_{kind}"]]
    out["_error"] = [""] * size
    for error in filter(None, errors):
        for column in processor.columns:
            out[column].append([])
        for column in processor.flags:
            out[column].append(False)
        for column in (PLACEHOLDERS if carry_media else ()):
            out[column].append("")
        out["_drop"].append("")
        out["_error"].append(error)
    return out


def _features(processor: Any, carry_media: bool) -> Any:
    from datasets import Features, List, Value

    features = {column: List(Value("int32")) for column in processor.columns}
    features.update({column: Value("bool") for column in processor.flags})
    features.update({column: Value("string") for column in (*(PLACEHOLDERS if carry_media else ()), "_drop", "_error")})
    return Features(features)


def _cache_location(names: list[str], data_args: DataArguments, stage: str, template: Any, tokenizer: Any,
                    packing: bool, split: str, markers: dict[str, str] | None = None) -> tuple[Path | None, str | None]:
    """(where the tokenised result lives, its content key); no cache when streaming.

    `tokenized_path` keeps LlamaFactory's meaning: load it if it is there, else save there.
    """
    if data_args.streaming:
        return None, None
    if data_args.tokenized_path:
        return Path(data_args.tokenized_path) / split, None
    attrs = [get_dataset_attr(name, data_args.dataset_dir) for name in names]
    hub = {a.name: f"{a.location}|{a.subset}|{a.split}|{a.folder}" for a in attrs if a.source != "file"}
    key = cache_key(attrs, tokenizer, template, {**_options(data_args, stage, names, markers), "packing": packing}, hub)
    return cache_root() / key, key


def _prepare(names: list[str], data_args: DataArguments, stage: str, template: Any, tokenizer: Any,
             report: DataReport, split: str = "train", hub: HubCredentials | None = None,
             markers: dict[str, str] | None = None) -> Dataset:
    spec = DATA_STAGES[stage]
    processor = spec.processor
    packing = data_args.packing if data_args.packing is not None else spec.plain_text
    ctx = Context(template=template, tokenizer=tokenizer, cutoff_len=data_args.cutoff_len,
                  train_on_prompt=data_args.train_on_prompt, mask_history=data_args.mask_history,
                  packing=packing, neat_packing=data_args.neat_packing, enable_thinking=data_args.enable_thinking,
                  special_tokens_in_content=data_args.special_tokens_in_content, media_markers=markers)
    location, key = _cache_location(names, data_args, stage, template, tokenizer, packing, split, markers)
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

    carry_media = not spec.plain_text and any(get_dataset_attr(name, data_args.dataset_dir).columns.get(kind)
                                        for name in names for kind in PLACEHOLDERS)
    tokenized = load_aligned(names, data_args.dataset_dir, max_samples=data_args.max_samples,
                             num_proc=data_args.preprocessing_num_workers, streaming=data_args.streaming,
                             mix_strategy=data_args.mix_strategy, interleave_probs=data_args.interleave_probs,
                             seed=data_args.seed, media_dir=data_args.media_dir, skip_invalid=data_args.skip_invalid,
                             needs_response=processor.needs_response, batch_size=data_args.preprocessing_batch_size, hub=hub,
                             then=partial(_tokenize, ctx=ctx, processor=processor, carry_media=carry_media),
                             features=_features(processor, carry_media))
    report.rows_read, report.invalid, report.errors = tokenized.rows_read, tokenized.invalid, tokenized.errors
    if tokenized.invalid and not data_args.skip_invalid:
        listed = "\n  ".join(tokenized.errors)
        more = (f"\n  ... and {tokenized.invalid - len(tokenized.errors)} more"
                if tokenized.invalid > len(tokenized.errors) else "")
        raise DataError(f"{tokenized.invalid} invalid row(s) in {', '.join(names)}:\n  {listed}{more}\n"
                        "Fix them, or set skip_invalid: true to drop them.")
    if tokenized.invalid:
        logger.warning("dropped %d invalid row(s) (skip_invalid: true)", tokenized.invalid)
    tokenized = tokenized.dataset
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
    if packing and not spec.plain_text:  # plain text is packed while it is tokenised
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


def build_dataset(data_args: DataArguments, tokenizer: Any, stage: str = "sft", template: Any = None,
                  hub: HubCredentials | None = None, media_markers: dict[str, str] | None = None) -> DatasetModule:
    """The train (and eval) datasets for a stage; `template` defaults to `data_args.template`; `hub`: the
    tokens and cache folder for hub datasets; `media_markers`: a multimodal model's marker per media kind
    (`<image>` is written as it; without markers media placeholders stay text)."""
    if not data_args.dataset:
        raise ConfigError("no `dataset` given: name one or more datasets from dataset_info.json "
                          "(for example dataset: identity).")
    with collector_paused(), batch_threads(data_args.preprocessing_num_workers, data_args.streaming):
        return _build_dataset(data_args, tokenizer, stage, template, hub, media_markers)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while rows are tokenised: the millions of small id lists
    made it run its passes again and again (a cold 10,000-row sft build: 1.87 s with it, 1.55 s
    without; bench/vs_llamafactory.py --work preprocess); nothing tokenising makes needs it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build_dataset(data_args: DataArguments, tokenizer: Any, stage: str, template: Any,
                   hub: HubCredentials | None, media_markers: dict[str, str] | None) -> DatasetModule:
    template = template if template is not None else with_options(get_template(data_args.template), data_args)
    check_stage_data(data_args, stage, data_args.dataset + (data_args.eval_dataset or []))
    report = DataReport()
    prepare = partial(_prepare, hub=hub, markers=media_markers)
    train = prepare(data_args.dataset, data_args, stage, template, tokenizer, report)
    evaluation = None
    if data_args.eval_dataset and data_args.eval_on_each_dataset:  # the Trainer reports eval_<name>_loss for each
        evaluation = {name: prepare([name], data_args, stage, template, tokenizer, DataReport(), "eval")
                      for name in data_args.eval_dataset}
    elif data_args.eval_dataset:
        evaluation = prepare(data_args.eval_dataset, data_args, stage, template, tokenizer, DataReport(), "eval")
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
