"""The runs the board shows, read from disk under one runs root (nothing is kept in memory).

Layout: `<root>/<model>/<method>/<name>/` is a run's output_dir, exactly what `lf train` leaves
(lf_config.yaml, trainer_log.jsonl, checkpoint-*, the adapter). What the board adds for a run it
launched (the YAML it ran, the console log, the process id) lives apart, in
`<root>/.board/runs/<model>/<method>/<name>/`, because `lf train` refuses to resume into an
output_dir that holds files it does not know.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lf_board.jobs import Job
from lf_data.run_folder import (
    ADAPTER_CONFIG,
    CHECKPOINT,
    FINISHED_MARKER,
    LOG_FILE,
    RESOLVED_CONFIG,
    checkpoints,
    read_log,
)

BOARD_DIR = ".board"
MAX_DEPTH = 4


class PathOutsideRoot(ValueError):
    """A path the board was asked to use lies outside the folder it may write to."""


@dataclass
class RunInfo:
    name: str
    """Path of the run under the runs root (posix), e.g. `smollm2-135m-instruct/lora/demo`."""
    path: Path
    status: str
    """running, finished, aborted, failed, stopped (ended with no board watching) or new."""
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    checkpoints: int = 0
    adapter: bool = False

    @property
    def resumable(self) -> bool:
        return self.status in ("aborted", "failed", "stopped")


def slug(text: str) -> str:
    """A folder name from a model reference: `org/name` -> `org--name`, paths -> their last part."""
    text = text.strip().rstrip("/")
    if text.endswith(".gguf") or text.startswith((".", "~", "/")) or Path(text).expanduser().exists():
        text = Path(text).name.removesuffix(".gguf")
    text = text.replace("/", "--")
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "model"


def loss_points(run_dir: Path) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["loss"])) for r in read_log(run_dir) if "loss" in r and "step" in r]


CURVES = {"loss": "loss", "rewards/mean": "reward", "kl": "kl"}
"""Logged key -> the curve it draws: the loss, and for online RL (grpo) the mean reward and the KL."""


def curve_points(run_dir: Path) -> list[tuple[int, str, float]]:
    """(step, curve, value) of every training log line, for the curves the run logs."""
    return [(int(r["step"]), curve, float(r[key])) for r in read_log(run_dir) if "step" in r and "loss" in r
            for key, curve in CURVES.items() if r.get(key) is not None]


class RunsRoot:
    """The folder every board-launched run is written under."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def inside(self, path: str | Path) -> Path:
        """`path` resolved, refused unless it lies strictly inside the runs root (and not in .board)."""
        resolved = (self.root / Path(path).expanduser()).resolve()
        if self.root not in resolved.parents:
            raise PathOutsideRoot(str(resolved))
        if resolved.relative_to(self.root).parts[0] == BOARD_DIR:
            raise PathOutsideRoot(str(resolved))
        return resolved

    def name_of(self, output_dir: str | Path) -> str:
        return self.inside(output_dir).relative_to(self.root).as_posix()

    def default_output_dir(self, model: str, method: str, name: str) -> Path:
        return self.root / slug(model or "model") / slug(method) / slug(name)

    def job(self, name: str) -> Job:
        return Job(self.root / BOARD_DIR / "runs" / name)

    def names(self) -> list[str]:
        """Every run under the root, newest first: folders `lf train` wrote and runs the board launched."""
        found: dict[str, float] = {}
        if not self.root.is_dir():
            return []
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            depth = len(here.relative_to(self.root).parts)
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and not CHECKPOINT.match(d)
                           and depth < MAX_DEPTH]
            if depth and (RESOLVED_CONFIG in filenames or LOG_FILE in filenames):
                found[here.relative_to(self.root).as_posix()] = here.stat().st_mtime
                dirnames[:] = []
        jobs = self.root / BOARD_DIR / "runs"
        if jobs.is_dir():
            for config in jobs.rglob("config.yaml"):
                name = config.parent.relative_to(jobs).as_posix()
                found[name] = max(found.get(name, 0.0), config.stat().st_mtime)
        return sorted(found, key=lambda n: (-found[n], n))

    def info(self, name: str) -> RunInfo:
        path = self.inside(name)
        job = self.job(name)
        state = job.state()
        points = read_log(path)
        last = next((r for r in reversed(points) if "loss" in r), points[-1] if points else {})
        found = checkpoints(path)
        if state == "running":
            status = "running"
        elif (path / FINISHED_MARKER).is_file():
            status = "finished"
        elif state in ("aborted", "failed"):
            status = state
        elif found or points or state in ("unknown", "done"):
            status = "stopped"
        else:
            status = "new"
        return RunInfo(name=name, path=path, status=status, step=last.get("step"), total_steps=last.get("total_steps"),
                       loss=last.get("loss"), checkpoints=len(found), adapter=(path / ADAPTER_CONFIG).is_file())

    def resume_config(self, name: str) -> Path | None:
        """The YAML a resumed run starts from: the board's own, else the one `lf train` resolved."""
        job = self.job(name)
        if job.config_path.is_file():
            return job.config_path
        resolved = self.inside(name) / RESOLVED_CONFIG
        return resolved if resolved.is_file() else None
