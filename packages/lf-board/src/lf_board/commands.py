"""`lf board`: a light module (gradio and torch are imported only when the command runs)."""

from __future__ import annotations

from lf_data.cli import Command


def _parse_auth(value: str | None) -> tuple[str, str] | None:
    import argparse

    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth takes USER:PASSWORD")
    return user, password


def _run_board(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="lf board", description="The LF web board: configure, preview, launch and watch training; evaluate, "
        "chat with and export the results.",
        epilog="Example: lf board --port 7860 --auth me:secret. The board binds 127.0.0.1 unless --host says "
        "otherwise; --share (a public gradio.live link) is off unless asked.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public share link (off by default)")
    parser.add_argument("--auth", type=_parse_auth, default=None, metavar="USER:PASSWORD",
                        help="ask for this user name and password")
    parser.add_argument("--runs-root", default="saves", help="folder runs are written to and listed from")
    parser.add_argument("--dataset-dir", default="data", help="default dataset folder (holds dataset_info.json)")
    parser.add_argument("--config-dir", default="configs", help="folder for configs saved from the page")
    parser.add_argument("--export-root", default="models", help="folder exports are written under")
    parser.add_argument("--eval-root", default="evals", help="folder evaluation results are written under")
    parser.add_argument("--lang", default="en", choices=["en", "ru", "zh"], help="language the page opens in")
    ns = parser.parse_args(argv)
    if ns.host not in ("127.0.0.1", "localhost", "::1") and ns.auth is None:
        print(f"warning: the board listens on {ns.host} without --auth; anyone who reaches it can start runs.")

    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from lf_board.app import create_app, launch

    demo = create_app(runs_root=ns.runs_root, dataset_dir=ns.dataset_dir, config_dir=ns.config_dir,
                      export_root=ns.export_root, eval_root=ns.eval_root, lang=ns.lang)
    import lf_train.run  # noqa: F401  (what the first validation needs, imported before the page opens)

    launch(demo, host=ns.host, port=ns.port, share=ns.share, auth=ns.auth)
    return 0


board = Command(help="the web board: train, evaluate, chat, export (lf board [--host H] [--port P] [--auth U:P])",
                run=_run_board)
