"""`lf board` (and `lf webui`, LlamaFactory's name for it) and `lf webchat`: a light module (gradio and
torch are imported only when a command runs)."""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

from lf_data.cli import Command, check_only, read_command_config, setup_logging
from lf_data.errors import ConfigError


def _parse_auth(value: str | None) -> tuple[str, str] | None:
    import argparse

    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth takes USER:PASSWORD")
    return user, password


def _gradio_env(host: str | None, share: bool) -> tuple[str, bool]:
    """(host, share) with gradio's own variables, as LlamaFactory's users set them: GRADIO_SERVER_NAME when
    no --host is given (127.0.0.1 without it), GRADIO_SHARE=1/true; GRADIO_SERVER_PORT gradio reads itself."""
    import os

    chosen = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    return chosen, share or os.environ.get("GRADIO_SHARE", "").lower() in ("1", "true", "y", "yes")


def _exposure(prog: str, host: str, share: bool, auth: Any, what: str) -> str | None:
    """The warning for a page others can reach without a sign-in: on a non-loopback address, or shared
    through a public link (--share or GRADIO_SHARE)."""
    from lf_serve.commands import is_loopback

    if auth:
        return None
    if share:
        return f"warning: {prog} is shared through a public link without --auth; anyone with the link can {what}."
    if not is_loopback(host):
        return f"warning: {prog} listens on {host} without --auth; anyone who reaches it can {what}."
    return None


def _run_board(argv: list[str], prog: str = "lf board") -> int:
    import argparse
    import os

    parser = argparse.ArgumentParser(
        prog=prog, description="The LF web board: configure, preview, launch and watch training; evaluate, "
        "chat with and export the results.",
        epilog="Example: lf board --port 7860 --auth me:secret. The board binds 127.0.0.1 unless --host says "
        "otherwise; --share (a public gradio.live link) is off unless asked.")
    parser.add_argument("--host", default=None, help="address to bind (default GRADIO_SERVER_NAME, else 127.0.0.1: "
                        "this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default GRADIO_SERVER_PORT, else the first free "
                        "one from 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public share link (off unless asked, or "
                        "GRADIO_SHARE=1)")
    parser.add_argument("--auth", type=_parse_auth, default=None, metavar="USER:PASSWORD",
                        help="ask for this user name and password")
    parser.add_argument("--runs-root", default="saves", help="folder runs are written to and listed from")
    parser.add_argument("--dataset-dir", default="data", help="default dataset folder (holds dataset_info.json)")
    parser.add_argument("--config-dir", default="configs", help="folder for configs saved from the page")
    parser.add_argument("--export-root", default="models", help="folder exports are written under")
    parser.add_argument("--eval-root", default="evals", help="folder evaluation results are written under")
    parser.add_argument("--lang", default="en", choices=["en", "ru", "zh"], help="language the page opens in")
    ns = parser.parse_args(argv)
    ns.host, ns.share = _gradio_env(ns.host, ns.share)
    port = ns.port if ns.port is not None else os.environ.get("GRADIO_SERVER_PORT")
    if port is not None and not (str(port).isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--port/GRADIO_SERVER_PORT {port!r} must be a port number (1-65535).")
    warning = _exposure(prog, ns.host, ns.share, ns.auth, "start runs")
    if warning:
        print(warning)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from lf_board.app import create_app, launch

    demo = create_app(runs_root=ns.runs_root, dataset_dir=ns.dataset_dir, config_dir=ns.config_dir,
                      export_root=ns.export_root, eval_root=ns.eval_root, lang=ns.lang)
    import lf_train.run  # noqa: F401  (what the first validation needs, imported before the page opens)

    launch(demo, host=ns.host, port=ns.port, share=ns.share, auth=ns.auth)
    return 0


def _run_webchat(argv: list[str]) -> int:
    import os

    from lf_board.translations import LANGUAGES
    from lf_serve.commands import print_serve_check, split_flags

    flags, argv = split_flags(argv, {"--host": True, "--port": True, "--auth": True, "--lang": True, "--share": False})
    config, source = read_command_config(
        "lf webchat", "Chat with one model in a browser page (LlamaFactory's `webchat`), from the YAML `lf chat` "
        "and `lf api` read. --host H (default GRADIO_SERVER_NAME, else 127.0.0.1: this machine only), --port P "
        "(default GRADIO_SERVER_PORT, else the first free one from 7860), --auth USER:PASSWORD (ask for a "
        "sign-in), --share (a public gradio.live link, off unless asked or GRADIO_SHARE=1), --lang en|ru|zh.",
        "Keys: see packages/lf-serve/README.md. Example: lf webchat examples/inference/smollm2.yaml --port 7861", argv)
    host, share = _gradio_env(str(flags.get("--host") or ""), bool(flags.get("--share")))
    port = str(flags.get("--port") or os.environ.get("GRADIO_SERVER_PORT") or "")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--port/GRADIO_SERVER_PORT {port!r} must be a port number (1-65535).")
    try:
        auth = _parse_auth(str(flags["--auth"])) if "--auth" in flags else None
    except Exception as err:
        raise ConfigError(str(err)) from None
    lang = str(flags.get("--lang") or "en")
    if lang not in LANGUAGES:
        raise ConfigError(f"--lang {lang!r}: choose one of {', '.join(LANGUAGES)}.")
    from lf_serve.args import parse_serve_config

    parse_serve_config(config, source)  # every key checked before the model (or gradio) loads
    warning = _exposure("lf webchat", host, share, auth, "use the model")
    if check_only(argv):
        where = f"page at http://{host}:{port or '7860 (or the next free port)'}"
        return print_serve_check("lf webchat", source, config, [where + (", sign-in required" if auth else "")]
                                 + (["with a public share link"] if share else [])
                                 + ([warning] if warning else []))
    setup_logging()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from lf_board.app import launch
    from lf_board.translations import text
    from lf_board.webchat import create_webchat
    from lf_serve.engine import load_engine

    if warning:
        print(warning, file=sys.stderr, flush=True)
    engine = load_engine(config, source)
    try:
        demo = create_webchat(engine, lang)
        print(f"Chatting with {engine.model_name!r} in the browser", flush=True)
        launch(demo, host=host, port=int(port) if port else None, share=share, auth=auth,
               auth_message=text(lang, "webchat.auth"))
    finally:
        engine.close()
    return 0


board = Command(help="the web board: train, evaluate, chat, export (lf board [--host H] [--port P] [--auth U:P])",
                run=_run_board)
webui = Command(help="LlamaFactory's name for `lf board`", run=partial(_run_board, prog="lf webui"))
webchat = Command(help="chat with a model in a browser page (lf webchat CONFIG [key=value ...] [--port P] [--check])",
                  run=_run_webchat)
