"""Training stages, one readable file each, registered here under the same `stage:` names as their
data side (`lf_data.stages.DATA_STAGES`; a test checks the two registries match).

Adding a stage: its data entry in lf-data (or an existing processor reused), one file here with its
`run_*` function (and its `check_*` when it has rules of its own), and one `Stage` entry below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lf_train.stages.dpo import needs_reference, run_dpo
from lf_train.stages.kto import run_kto
from lf_train.stages.ppo import check_ppo, run_ppo
from lf_train.stages.rm import run_rm
from lf_train.stages.sft import run_sft

if TYPE_CHECKING:
    from lf_train.args import TrainArguments
    from lf_train.plan import TrainPlan


def _no_rules(plan: TrainPlan) -> None:
    return None


def _never(train: TrainArguments) -> bool:
    return False


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., Any]
    """(model, tokenizer, data, plan, callbacks[, reference=]) -> trains and saves into output_dir."""
    value_head: bool = False
    """The model carries a scalar value head (reward models, PPO's value estimates)."""
    needs_reference: Callable[[TrainArguments], bool] = _never
    """Whether a frozen reference model is needed (LoRA switches its adapter off instead of loading one)."""
    can_predict: bool = False
    """do_predict can generate answers for eval_dataset after training."""
    check: Callable[[TrainPlan], None] = _no_rules
    """The stage's own rules, checked with the rest of the config before anything loads."""


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("pt", run_sft, can_predict=True),  # pre-training is the sft loop on packed plain text
    Stage("sft", run_sft, can_predict=True),
    Stage("rm", run_rm, value_head=True),
    Stage("dpo", run_dpo, needs_reference=needs_reference),
    Stage("kto", run_kto, needs_reference=lambda train: True),
    Stage("ppo", run_ppo, value_head=True, check=check_ppo),
)}

__all__ = ["STAGES", "Stage"]
