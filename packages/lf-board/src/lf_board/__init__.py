"""LF board: the Gradio web board over the whole stack (`lf board`).

    from lf_board import create_app
    demo = create_app(runs_root="saves")   # a gr.Blocks; demo.launch() serves it

Importing this package is light: gradio loads when the app is created.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    from lf_board.app import create_app as _create_app

    return _create_app(*args, **kwargs)
