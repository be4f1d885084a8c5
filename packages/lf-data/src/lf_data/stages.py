"""The data side of every training stage, in one registry keyed by the `stage:` name.

lf-train keeps the training side (`lf_train.stages.STAGES`, same keys; a test checks they match).
Everything that lists or checks stages reads this table: the `stage` key's choices, which datasets a
stage accepts, whether it can pack, how it tokenises, what `lf data check` and the board show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lf_data.processors import (
    TOKEN_COLUMNS,
    Processor,
    feedback,
    pairwise,
    pretrain,
    supervised,
    unsupervised,
)


@dataclass(frozen=True)
class DataStage:
    name: str
    summary: str
    processor: Processor
    needs: Literal["", "ranking", "kto_tag"] = ""
    """What each row must have: chosen/rejected pairs (`ranking` datasets) or a desirable/undesirable tag."""
    packable: bool = False
    plain_text: bool = False
    """Rows are read as text (no template, no media; any dataset) and packed by default."""
    trained: tuple[str, str] | None = ("input_ids", "labels")
    """(ids column, labels column) whose trained tokens `lf data check` counts; None: prompts only."""

    @property
    def pairwise(self) -> bool:
        return self.needs == "ranking"


_pairs = Processor(pairwise.tokenize_pairwise, pairwise.has_trainable_tokens,
                   "no trainable token in chosen or rejected", columns=pairwise.COLUMNS)

_prompts = Processor(unsupervised.tokenize_unsupervised, unsupervised.has_prompt, "empty prompt",
                     needs_response=False, columns=TOKEN_COLUMNS)
"""ppo and grpo: the prompt ends with the template's generation prompt; the reference answer, when the
row has one (alpaca `output`/`response`, the last assistant message), is kept as `labels`."""

DATA_STAGES: dict[str, DataStage] = {stage.name: stage for stage in (
    DataStage("pt", "language modelling on plain text",
              Processor(pretrain.tokenize_pretrain, pretrain.has_tokens, "empty text", needs_response=False),
              packable=True, plain_text=True, trained=("input_ids", "labels")),
    DataStage("sft", "supervised fine-tuning on conversations",
              Processor(supervised.tokenize_supervised, supervised.has_trainable_tokens,
                        "no trainable token (no answer, or cut off by cutoff_len)"),
              packable=True),
    DataStage("rm", "pairwise reward model with a value head", _pairs, needs="ranking",
              trained=("chosen_input_ids", "chosen_labels")),
    DataStage("dpo", "preference optimisation (pref_loss: TRL's DPO losses, orpo, simpo, cpo)", _pairs,
              needs="ranking", trained=("chosen_input_ids", "chosen_labels")),
    DataStage("kto", "desirable/undesirable answers",
              Processor(feedback.tokenize_feedback, feedback.has_trainable_tokens, "no trainable token, or no kto_tag",
                        columns=feedback.COLUMNS[:-1], flags=("kto_tags",)),
              needs="kto_tag"),
    DataStage("ppo", "reinforcement learning from a reward model's scores of sampled answers", _prompts,
              trained=None),
    DataStage("grpo", "reinforcement learning with verifiable rewards (reward_funcs) on groups of sampled answers",
              _prompts, trained=None),
)}
STAGE_NAMES: tuple[str, ...] = tuple(DATA_STAGES)
StageName = Literal[STAGE_NAMES]  # the `stage:` key's type, wherever a section declares it
