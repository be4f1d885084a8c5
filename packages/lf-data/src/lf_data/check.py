"""`lf data check`: read every row of every configured dataset before any model loads, and say what
training would get: rows kept and dropped (and why), the first problems, token lengths, how much
`cutoff_len` cuts, the share of trained tokens, and one rendered example."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from lf_data.aligner import MEDIA as MEDIA_COLUMNS
from lf_data.args import DataArguments
from lf_data.config import build_section, coerce_value
from lf_data.errors import ConfigError
from lf_data.pipeline import DataReport, build_dataset
from lf_data.processors import IGNORE_INDEX
from lf_data.render import load_tokenizer
from lf_data.run_folder import resolve_template
from lf_data.stages import DATA_STAGES, StageName
from lf_data.templates import Template, check_against_tokenizer, get_template, with_options

BINS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass
class CheckResult:
    stage: str
    template: str
    report: DataReport
    lengths: list[int]
    full_lengths: list[int]
    cutoff_len: int
    trained_tokens: int
    total_tokens: int
    example: list[tuple[str, bool]] = field(default_factory=list)  # (text piece, trained?)
    template_warning: str | None = None
    media: bool = False
    """The rows carry media for a multimodal model: lengths count each item as its marker only."""

    @property
    def truncated(self) -> int:
        return sum(1 for n in self.full_lengths if n > self.cutoff_len)


def _ids_and_labels(row: dict[str, Any], stage: str) -> tuple[list[int], list[int]]:
    trained = DATA_STAGES[stage].trained
    if trained is None:  # prompts only (ppo): nothing is trained on the data's tokens
        return row["input_ids"], [IGNORE_INDEX] * len(row["input_ids"])
    return row[trained[0]], row[trained[1]]


MEDIA_READERS = "lf.media_readers"


def _media_reader(config: dict[str, Any], tokenizer: Any, data_args: DataArguments) -> Any:
    """The model's media reader (lf_models.media.MediaInputs, through the `lf.media_readers` entry point
    that lf-models installs) when the data has images, videos or audios; None for text data or when
    lf-models is not installed (the placeholders then show as written)."""
    from importlib.metadata import entry_points

    from lf_data.dataset_info import media_kinds

    kinds = {kind for found in media_kinds(data_args.dataset or [], data_args.dataset_dir).values() for kind in found}
    if not kinds:
        return None
    for ep in entry_points(group=MEDIA_READERS):
        return ep.load()(config, tokenizer, kinds)
    return None


def _runs(ids: list[int], tokenizer: Any) -> str:
    """Decoded text with runs of one repeated added token shown once with a count (an image is hundreds
    of identical feature tokens)."""
    added = set((getattr(tokenizer, "added_tokens_decoder", None) or {}).keys()) | set(tokenizer.all_special_ids)
    pieces: list[str] = []
    chunk: list[int] = []
    i = 0
    while i < len(ids):
        j = i
        while j < len(ids) and ids[j] == ids[i]:
            j += 1
        if ids[i] in added and j - i > 2:
            pieces += [tokenizer.decode(chunk), f"{tokenizer.convert_ids_to_tokens(ids[i])}×{j - i}"]
            chunk = []
        else:
            chunk += ids[i:j]
        i = j
    pieces.append(tokenizer.decode(chunk))
    return "".join(pieces)


def run_check(config: dict[str, Any]) -> CheckResult:
    stage = coerce_value("stage", config.get("stage", "sft"), StageName)  # before the tokenizer loads
    if not config.get("model_name_or_path"):
        raise ConfigError("`model_name_or_path` is required: lf data check tokenises with the model's tokenizer.")
    data_keys = {f.name for f in dataclasses.fields(DataArguments)}
    data_args = build_section(DataArguments, {k: v for k, v in config.items() if k in data_keys})
    if data_args.streaming:
        raise ConfigError("lf data check reads every row; set streaming: false to check the data.")
    data_args.skip_invalid = True  # collect every problem instead of stopping at the first
    tokenizer, default_template = load_tokenizer(config["model_name_or_path"], bool(config.get("trust_remote_code")))
    template = with_options(get_template(resolve_template(data_args.template, None, default_template)), data_args)
    warning = check_against_tokenizer(template, tokenizer)  # before the template's own Jinja replaces it
    if isinstance(template, Template):
        tokenizer.chat_template = template.to_jinja()

    media = _media_reader(config, tokenizer, data_args)
    markers = media.markers if media is not None else None
    module = build_dataset(data_args, tokenizer, stage, template, media_markers=markers)
    rows = module.train_dataset
    full_args = dataclasses.replace(data_args, cutoff_len=1 << 30, packing=False, neat_packing=False,
                                    val_size=0.0, eval_dataset=None)
    full = build_dataset(full_args, tokenizer, stage, template, media_markers=markers).train_dataset
    lengths, trained, total = [], 0, 0
    for row in rows:
        ids, labels = _ids_and_labels(row, stage)
        lengths.append(len(ids))
        total += len(ids)
        trained += sum(1 for t in labels if t != IGNORE_INDEX)
    full_lengths = [len(_ids_and_labels(r, stage)[0]) for r in full]

    example: list[tuple[str, bool]] = []
    if len(rows):
        ids, labels = _ids_and_labels(rows[0], stage)
        if media is not None and any(rows[0].get(kind) for kind in MEDIA_COLUMNS):  # as the model sees it
            expanded = media.expand(list(ids), list(labels),
                                    {kind: json.loads(rows[0][kind]) for kind in MEDIA_COLUMNS if rows[0].get(kind)})
            ids, labels = expanded.input_ids, expanded.labels
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
                example.append((_runs(ids[start:i], tokenizer),
                                labels[start] != IGNORE_INDEX))
                start = i
    return CheckResult(stage, template.name, module.report, lengths, full_lengths, data_args.cutoff_len,
                       trained, total, example, warning, media is not None)


def format_check(result: CheckResult, color: bool | None = None) -> str:
    color = sys.stdout.isatty() if color is None else color
    r = result.report
    lines = [f"stage {result.stage}, template {result.template}, cutoff_len {result.cutoff_len}", ""]
    lines.append(f"rows read     {r.rows_read}")
    lines.append(f"invalid       {r.invalid}" + (" (not trained on; set skip_invalid: true to train on the rest)"
                                                 if r.invalid else ""))
    lines.append(f"dropped       {r.dropped}")
    lines += [f"  {count:>11}  {reason}" for reason, count in (r.drop_reasons or {}).items()]
    lines.append(f"kept          {r.kept}" + (f"  (cache {r.cache}: {r.cache_path})" if r.cache != "off" else ""))
    if r.errors:
        lines += ["", "first problems:"] + [f"  {e}" for e in r.errors]
    if result.template_warning:
        lines += ["", f"warning: template {result.template!r} differs from the tokenizer's own chat template: "
                      f"{result.template_warning}"]
    lines += ["", "token lengths (after cutoff_len):"]
    counts, low = [], 0
    for high in BINS:
        n = sum(1 for x in result.lengths if low < x <= high)
        if n:
            counts.append((f"{low + 1}-{high}", n))
        low = high
    n = sum(1 for x in result.lengths if x > BINS[-1])
    if n:
        counts.append((f">{BINS[-1]}", n))
    peak = max((c for _, c in counts), default=1)
    lines += [f"  {label:>11} {count:>7} {'#' * max(1, round(40 * count / peak))}" for label, count in counts]
    if result.lengths:
        ordered = sorted(result.lengths)
        lines.append(f"  min {ordered[0]}, median {ordered[len(ordered) // 2]}, max {ordered[-1]}")
    lines.append(f"truncated by cutoff_len: {result.truncated} of {len(result.full_lengths)}")
    if result.media:
        lines.append("(media: lengths count each image, video or audio as its marker; its feature tokens, shown "
                     "in the example, are added at batch time)")
    share = result.trained_tokens / result.total_tokens if result.total_tokens else 0.0
    lines.append(f"trained tokens: {result.trained_tokens} of {result.total_tokens} ({share:.1%})")
    if result.example:
        lines += ["", "first example (trained tokens " + ("in green" if color else "between ⟦ and ⟧") + "):"]
        text = "".join((f"\033[32m{piece}\033[0m" if color else f"⟦{piece}⟧") if trained else piece
                       for piece, trained in result.example)
        lines.append(text)
    return "\n".join(lines)
