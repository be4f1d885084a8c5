"""Training stages, one readable file each, registered by their `stage:` name."""

from lf_train.stages.dpo import run_dpo
from lf_train.stages.kto import run_kto
from lf_train.stages.ppo import run_ppo
from lf_train.stages.rm import run_rm
from lf_train.stages.sft import run_sft

# pre-training is supervised language modelling on packed text: the same loop as sft
STAGES = {"pt": run_sft, "sft": run_sft, "rm": run_rm, "dpo": run_dpo, "kto": run_kto, "ppo": run_ppo}
VALUE_HEAD_STAGES = ("rm", "ppo")

__all__ = ["STAGES", "VALUE_HEAD_STAGES"]
