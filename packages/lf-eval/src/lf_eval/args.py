"""The evaluation part of the configuration (LLaMA-Factory's key names)."""

from __future__ import annotations

from typing import Annotated, Literal

from lf_data.config import AtLeastOne, NonNegative, section
from lf_data.errors import ConfigError

PREDICT_TASK = "predict"


@section
class EvalArguments:
    task: str | None = None
    """`NAME_SPLIT` for a multiple-choice benchmark (mmlu_test, cmmlu_test, ceval_val, or any local task
    folder in the same layout), or `predict` to generate an answer for every row of `dataset`."""
    task_dir: str = "evaluation"
    """Folder holding one sub-folder per multiple-choice task (`{task_dir}/mmlu/data/test/...`)."""
    n_shot: Annotated[int, NonNegative] = 5
    """Solved examples from the subject's dev split placed before each question, as prior chat turns."""
    lang: Literal["en", "zh"] | None = None
    """Language of the prompt's instruction and answer cue (default: the benchmark's own; en otherwise)."""
    subjects: list[str] | None = None
    """Evaluate only these subjects (default: every subject of the task)."""
    save_dir: str | None = None
    """Folder for results.json (multiple choice) or generated_predictions.jsonl and predict_results.json."""
    overwrite_save_dir: bool = False
    """Replace results already in save_dir."""
    batch_size: Annotated[int, AtLeastOne] = 4
    """Prompts scored (or generated) together."""

    def __post_init__(self) -> None:
        if not self.task:
            raise ConfigError("`task` is required: a benchmark and split such as mmlu_test, ceval_val or "
                              "cmmlu_test, or `predict` to generate answers for `dataset`.")
        if self.task == PREDICT_TASK and not self.save_dir:
            raise ConfigError("task: predict needs `save_dir`, the folder where generated_predictions.jsonl goes.")
