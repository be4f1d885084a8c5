"""Commands the board launches (`lf train`, `lf export`, `lf eval`) as subprocesses.

Each job lives in its own folder: the YAML it runs, its console log, its process id and how it
ended. The board keeps nothing in memory that it cannot read back from that folder, so a board
that restarts still sees, follows and aborts the jobs it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"
LOG_FILE = "console.log"
PID_FILE = "pid"
EXIT_FILE = "exit_code"
ABORTED_FILE = "aborted"


@dataclass(frozen=True)
class Job:
    """The folder of one launched command."""

    folder: Path

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    def pid(self) -> int | None:
        try:
            return int((self.folder / PID_FILE).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid)

    def aborted(self) -> bool:
        return (self.folder / ABORTED_FILE).is_file()

    def exit_code(self) -> int | None:
        try:
            return int((self.folder / EXIT_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def state(self) -> str:
        """running, aborted, failed, done, or unknown (ended while no board watched it), or new."""
        if self.running():
            return "running"
        if self.aborted():
            return "aborted"
        code = self.exit_code()
        if code is not None:
            return "done" if code == 0 else "failed"
        return "unknown" if self.pid() is not None else "new"


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def lf_command(command: str, config_path: Path) -> list[str]:
    """The `lf <command> <yaml>` line run in the board's Python environment (`data check` is two words)."""
    return [sys.executable, "-m", "lf_data.cli", *command.split(), str(config_path)]


def write_atomic(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)


def launch(folder: Path, command: str, config: dict[str, Any] | None = None) -> Job:
    """Start `lf <command> folder/config.yaml` in its own process group; returns at once.

    With `config` the YAML is (re)written first; without it the job's existing YAML runs again
    (resuming a training run). The console log is appended to, so a resumed run keeps its history.
    """
    from lf_data.atomic_files import write_yaml_atomic

    job = Job(folder)
    if job.running():
        raise RuntimeError(f"{folder} is already running (pid {job.pid()})")
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write_yaml_atomic(job.config_path, config)
    for marker in (EXIT_FILE, ABORTED_FILE):
        (folder / marker).unlink(missing_ok=True)
    from lf_data import tokenizer_threads

    env = tokenizer_threads.for_child({**os.environ, "PYTHONUNBUFFERED": "1"})
    with open(job.log_path, "a", encoding="utf-8") as log:
        log.write(f"$ lf {command} {job.config_path}\n")
        log.flush()
        process = subprocess.Popen(lf_command(command, job.config_path), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    write_atomic(folder / PID_FILE, f"{process.pid} {time.time():.0f}\n")
    threading.Thread(target=_record_exit, args=(process, folder), daemon=True).start()
    return job


def _record_exit(process: subprocess.Popen, folder: Path) -> None:
    code = process.wait()
    write_atomic(folder / EXIT_FILE, f"{code}\n")


def abort(job: Job, grace_seconds: float = 20.0) -> bool:
    """SIGTERM the job's process group, wait for it to end (SIGKILL after the grace period).

    Returns False when there was nothing running."""
    pid = job.pid()
    if pid is None or not _alive(pid):
        return False
    write_atomic(job.folder / ABORTED_FILE, f"{time.time():.0f}\n")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    return True


def read_console(job: Job, max_chars: int = 20000) -> str:
    """The end of the console log as a terminal would show it (progress bars redrawn with \\r)."""
    try:
        with open(job.log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4 * max_chars))
            raw = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in raw.split("\n")]
    return "\n".join(lines)[-max_chars:]
