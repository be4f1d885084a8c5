"""What every tab says back: the message box text (a localised headline over the library's English
details), the status words of runs and jobs, and the abort handler the Export and Evaluate tabs share.

It lives apart from the tabs so that no tab imports another one."""

from __future__ import annotations

from pathlib import Path

from lf_board import jobs
from lf_board.translations import text

RUN_STATUS_KEYS = {"running": "status.running", "finished": "status.finished", "aborted": "status.aborted",
                   "failed": "status.failed", "stopped": "status.stopped", "new": "status.new"}
"""A training run's status (lf_board.runs) -> its locale key."""
JOB_STATE_KEYS = {"running": "status.running", "done": "status.finished", "failed": "status.failed",
                  "aborted": "status.aborted", "unknown": "status.stopped", "new": "status.new"}
"""An export or evaluation job's state (lf_board.jobs) -> its locale key."""


def message(lang: str, key: str, detail: str = "", error: bool = False) -> str:
    """A message box text: a localised headline, then the details (library messages are English)."""
    import gradio as gr

    headline = text(lang, key)
    if error:
        gr.Warning(f"{headline} {detail}".strip())
    body = f"**{'⚠️ ' if error else ''}{headline}**"
    return body + (f"\n\n```text\n{detail}\n```" if detail else "")


def abort_folder_job(folder: str, lang: str) -> str:
    """Abort the export or evaluation job started from the page (its job folder); the message to show."""
    if folder and jobs.abort(jobs.Job(Path(folder))):
        return message(lang, "msg.aborted", folder)
    return message(lang, "msg.not_running", "", error=True)
