"""Checkpoints that are either complete or invisible.

The Trainer writes `checkpoint-N/` file by file, so a run killed during a save leaves a folder that
`get_last_checkpoint` would pick up and fail to resume from (or resume from silently wrong
optimizer state). LF's trainers write every checkpoint into a staging folder that resume never
looks at, flush it to disk, and only then rename it to `checkpoint-N` in one atomic step; older
checkpoints are rotated out after that, so a complete one always exists.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from lf_data.atomic_files import share_tree
from lf_data.run_folder import STAGING_DIR


def _flush_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


class AtomicCheckpointMixin:
    """Mix in before a transformers Trainer class: `class T(AtomicCheckpointMixin, Trainer)`."""

    _lf_staging = False

    def _get_output_dir(self, trial: Any) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._lf_staging else run_dir

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = run_dir / STAGING_DIR / name, run_dir / name
        if self.args.should_save and staged.parent.exists():
            shutil.rmtree(staged.parent)  # what a killed save left behind
        self.accelerator.wait_for_everyone()
        self._lf_staging = True
        try:
            super()._save_checkpoint(model, trial)  # every rank writes its part into the staging folder
        finally:
            self._lf_staging = False
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            _flush_tree(share_tree(staged))
            if final.exists():  # the same step saved twice (e.g. a final save after a step save)
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(staged.parent, ignore_errors=True)
            if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint) == staged:
                self.state.best_model_checkpoint = str(final)
            rotate_checkpoints(str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()


def atomic_checkpoints(trainer_class: type) -> type:
    """`trainer_class` with atomic checkpoint saves (a subclass; the original is left alone)."""
    if issubclass(trainer_class, AtomicCheckpointMixin):
        return trainer_class
    return type(trainer_class.__name__, (AtomicCheckpointMixin, trainer_class), {})
