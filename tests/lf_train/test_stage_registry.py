"""A stage is one unit: its data side (lf-data), training side (lf-train), the `stage` key's choices
and the board's choices are the same names, read from the registries."""

from __future__ import annotations

import typing

import pytest

from lf_board.train_form import FIELDS
from lf_data.config import read_config
from lf_data.errors import ConfigError
from lf_data.stages import DATA_STAGES
from lf_train.args import TrainArguments
from lf_train.plan import parse_train_config
from lf_train.stages import STAGES


def test_every_stage_is_registered_on_both_sides_and_offered_everywhere():
    assert list(STAGES) == list(DATA_STAGES)
    assert all(name == stage.name for name, stage in STAGES.items())
    assert all(name == stage.name for name, stage in DATA_STAGES.items())
    assert typing.get_args(typing.get_type_hints(TrainArguments)["stage"]) == tuple(DATA_STAGES)
    board_stage = next(field for field in FIELDS if field.key == "stage")
    assert tuple(board_stage.choices) == tuple(DATA_STAGES)


@pytest.mark.parametrize(("overrides", "message"), [
    (["stage=ppo", "max_steps=2"], "needs reward_model"),
    (["stage=ppo", "finetuning_type=full"], "needs finetuning_type: lora"),
    (["stage=ppo_x"], "Did you mean 'ppo'"),
    (["learning_rate=0"], "learning_rate=0.0 must be above 0"),
    (["per_device_train_batch_size=0"], "must be at least 1"),
    (["gradient_accumulation_steps=abc"], "gradient_accumulation_steps must be an integer"),
    (["lora_rank=0"], "lora_rank=0 must be at least 1"),
    (["quantization_bit=4", "finetuning_type=full"], "a quantised model trains only through adapters"),
])
def test_bad_values_stop_in_the_one_config_path(tmp_path, overrides, message):
    config = read_config("examples/quickstart.yaml", [f"output_dir={tmp_path / 'out'}", *overrides])
    with pytest.raises(ConfigError, match=message):
        parse_train_config(config, "examples/quickstart.yaml")
