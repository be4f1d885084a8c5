"""The data part of the configuration (LlamaFactory-compatible key names)."""

from __future__ import annotations

from typing import Annotated, Literal

from lf_data.config import AtLeastOne, NonNegative, Range, section
from lf_data.errors import ConfigError


@section
class DataArguments:
    template: str | None = None
    """Chat template name (see `lf_data.templates.TEMPLATES`), or `auto`/unset for the tokenizer's own."""
    dataset: list[str] | None = None
    """Comma-separated names from `dataset_info.json`, merged in order."""
    dataset_dir: str = "data"
    """Folder holding `dataset_info.json` and the local dataset files."""
    cutoff_len: Annotated[int, Range(ge=2, hint="use at least a few hundred tokens")] = 2048
    """Maximum tokens per example after tokenisation; longer conversations are truncated."""
    max_samples: Annotated[int, AtLeastOne] | None = None
    """Keep at most this many rows of each dataset (for quick runs)."""
    train_on_prompt: bool = False
    """Also compute the loss on prompt tokens (normally only assistant tokens are trained)."""
    mask_history: bool = False
    """Train only on the last assistant turn of each conversation."""
    preprocessing_num_workers: Annotated[int, AtLeastOne] | None = None
    """Processes used to tokenise the dataset."""
    eval_dataset: list[str] | None = None
    """Datasets for evaluation (names from dataset_info.json)."""
    val_size: Annotated[float, NonNegative] = 0.0
    """Hold out this fraction (< 1) or number (>= 1) of training rows for evaluation."""
    streaming: bool = False
    """Read datasets lazily instead of preparing them on disk (for data larger than the disk)."""
    buffer_size: Annotated[int, AtLeastOne] = 16384
    """Shuffle buffer when streaming."""
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = "concat"
    """How several datasets are merged: one after another, or interleaved until the shortest
    (under) or the longest (over) is exhausted."""
    interleave_probs: list[float] | None = None
    """Sampling probability of each dataset when interleaving."""
    packing: bool | None = None
    """Pack several examples into each `cutoff_len` sequence (default: on for pt, off otherwise)."""
    neat_packing: bool = False
    """Pack without cross-attention between the packed examples (implies packing)."""
    enable_thinking: bool | None = None
    """For reasoning templates: false renders the empty thinking block (no-think mode); unset keeps
    the template's default."""
    default_system: str | None = None
    """System prompt for conversations that have none, in training, serving and the exported chat template
    (replaces the template's own default)."""
    tool_format: str | None = None
    """How tool definitions and calls are written (`lf_data.templates.TOOL_FORMATS`: default, qwen, llama3,
    glm4, mistral, ...); unset: the template's own."""
    preserve_thinking: bool = False
    """Reasoning templates: keep the reasoning of earlier turns in the history (the model's template drops it)."""
    eval_on_each_dataset: bool = False
    """Evaluate each eval_dataset on its own (metrics per dataset: eval_<name>_loss) instead of together."""
    preprocessing_batch_size: Annotated[int, AtLeastOne] = 1000
    """Rows per batch while tokenising."""
    special_tokens_in_content: bool = False
    """Let special-token text inside messages (`<|im_start|>`, `<|eot_id|>`, ...) become control tokens, as
    LlamaFactory does. Off: it stays plain text, so a row or an API caller cannot forge turns."""
    skip_invalid: bool = False
    """Drop invalid rows (and say how many) instead of refusing the data."""
    media_dir: str | None = None
    """Folder that relative image/video/audio paths start from (default: dataset_dir)."""
    tokenized_path: str | None = None
    """Save the tokenised dataset here, or load it from here if it exists."""
    overwrite_cache: bool = False
    """Tokenise again even when a cached result for the same inputs exists."""
    seed: int = 42
    """Seed for splitting, interleaving and shuffling (shared with training)."""

    def __post_init__(self) -> None:
        if self.template == "":
            self.template = None
        if self.val_size < 0 or (self.val_size >= 1 and not float(self.val_size).is_integer()):
            raise ConfigError(f"val_size={self.val_size} must be a fraction below 1 or a whole number of rows.")
        if self.neat_packing:
            self.packing = True
        if self.interleave_probs is not None and self.mix_strategy == "concat":
            raise ConfigError("interleave_probs needs mix_strategy: interleave_under or interleave_over.")
        if self.interleave_probs is not None and abs(sum(self.interleave_probs) - 1.0) > 1e-6:
            raise ConfigError(f"interleave_probs {self.interleave_probs} must sum to 1.")
        if self.tool_format is not None:
            from lf_data.templates.tools import TOOL_FORMATS

            if self.tool_format not in TOOL_FORMATS:
                raise ConfigError(f"tool_format {self.tool_format!r} is not one of {', '.join(sorted(TOOL_FORMATS))}.")
        if self.eval_on_each_dataset and self.streaming:
            raise ConfigError("eval_on_each_dataset needs streaming: false.")
        if self.streaming and self.val_size and self.val_size < 1:
            raise ConfigError("with streaming: true the size of the data is unknown; give val_size as a number "
                              "of rows (for example val_size: 500).")
