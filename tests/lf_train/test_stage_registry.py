"""A stage is one unit: its data side (lf-data), training side (lf-train), the `stage` key's choices
and the board's choices are the same names, read from the registries."""

from __future__ import annotations

import typing

from lf_board.train_form import FIELDS
from lf_data.stages import DATA_STAGES
from lf_train.args import TrainArguments
from lf_train.stages import STAGES


def test_every_stage_is_registered_on_both_sides_and_offered_everywhere():
    assert list(STAGES) == list(DATA_STAGES)
    assert all(name == stage.name for name, stage in STAGES.items())
    assert all(name == stage.name for name, stage in DATA_STAGES.items())
    assert typing.get_args(typing.get_type_hints(TrainArguments)["stage"]) == tuple(DATA_STAGES)
    board_stage = next(field for field in FIELDS if field.key == "stage")
    assert tuple(board_stage.choices) == tuple(DATA_STAGES)
