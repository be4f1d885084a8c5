"""`lf api` and `lf chat`: light modules (torch, fastapi and uvicorn load when a command runs)."""

from __future__ import annotations

import sys

from lf_data.cli import Command, check_only, print_check, read_command_config, setup_logging


def split_flags(argv: list[str], flags: dict[str, bool]) -> tuple[dict[str, str | bool], list[str]]:
    """Pull `--flag value` / `--flag=value` / boolean `--flag` options out of a CONFIG [key=value] line."""
    found: dict[str, str | bool] = {}
    rest, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name, sep, value = arg.partition("=")
        if name in flags:
            if not flags[name]:
                found[name] = True
            elif sep:
                found[name] = value
            elif i + 1 < len(argv):
                found[name] = argv[i + 1]
                i += 1
            else:
                raise SystemExit(f"{name} needs a value")
        else:
            rest.append(arg)
        i += 1
    return found, rest


def is_loopback(host: str) -> bool:
    """Only this machine can reach a loopback address; a host name is taken as reachable by others."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for a server others can reach without a key (as `lf board` warns without --auth)."""
    if is_loopback(host) or api_key:
        return None
    return (f"warning: lf api listens on {host} without API_KEY; anyone who reaches it can use the model. "
            "Set API_KEY to require `Authorization: Bearer <key>`, or bind 127.0.0.1.")


def print_serve_check(prog: str, source: str, config: dict, extra: list[str] = ()) -> int:
    """`--check`: every key checked, the model and template a run would use; nothing loaded."""
    import dataclasses

    from lf_data.run_folder import resolve_template
    from lf_models.default_template import default_template
    from lf_serve.args import parse_serve_config

    plan = parse_serve_config(config, source)
    adapters = plan.model.adapter_name_or_path or []
    template = resolve_template(plan.data.template, adapters, default_template(plan.model.model_name_or_path))
    what = [f"model {plan.model.model_name_or_path}" + (f" + adapters {', '.join(adapters)}" if adapters else "")
            + f" on the {plan.infer.infer_backend} engine, served as {plan.model_name()!r}",
            f"template {template or 'auto (the tokenizer’s own)'}", *extra]
    sections = (plan.model, plan.data, plan.generating, plan.infer)
    return print_check(prog, source, what, {k: v for s in sections for k, v in dataclasses.asdict(s).items()})


def _run_api(argv: list[str]) -> int:
    import os

    flags, argv = split_flags(argv, {"--host": True, "--port": True})
    config, source = read_command_config(
        "lf api", "Serve a model behind an OpenAI-compatible API (binds 127.0.0.1 unless API_HOST/--host says "
        "otherwise; API_KEY enables Bearer authentication).",
        "Keys: see packages/lf-serve/README.md. Example: lf api examples/inference/smollm2.yaml", argv)
    from lf_data.errors import ConfigError

    host = str(flags.get("--host") or os.environ.get("API_HOST") or "127.0.0.1")
    port_text = str(flags.get("--port") or os.environ.get("API_PORT") or "8000")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"API_PORT/--port {port_text!r} must be a port number (0-65535).")
    root_path = os.environ.get("FASTAPI_ROOT_PATH", "").rstrip("/")  # LlamaFactory's name, behind a proxy
    if root_path and not root_path.startswith("/"):
        raise ConfigError(f"FASTAPI_ROOT_PATH {root_path!r} must be a path that starts with /, such as /llm.")
    from lf_serve.args import parse_serve_config

    parse_serve_config(config, source)  # every key checked before the model (or torch) loads
    api_key = os.environ.get("API_KEY") or None
    warning = exposure_warning(host, api_key)
    if check_only(argv):
        where = f"listening on http://{host}:{port_text}/v1" + (f", served as {root_path}/v1 behind a proxy"
                                                                 if root_path else "")
        return print_serve_check("lf api", source, config,
                                 [where + (", API key required" if api_key else ", no API key")]
                                 + ([warning] if warning else []))
    setup_logging()
    import uvicorn

    from lf_serve.api.app import create_app
    from lf_serve.engine import load_engine

    if warning:
        print(warning, file=sys.stderr, flush=True)
    engine = load_engine(config, source)
    app = create_app(engine, api_key=api_key, root_path=root_path)
    print(f"Serving {engine.model_name!r} on http://{host}:{port_text}/v1 (docs at /docs)", flush=True)
    if warning:  # again, after the model's loading logs
        print(warning, file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=int(port_text), log_level="info", timeout_graceful_shutdown=5)
    finally:
        engine.close()
    return 0


def _run_chat(argv: list[str]) -> int:
    flags, argv = split_flags(argv, {"--system": True, "--query": True, "--no-stream": False})
    config, source = read_command_config(
        "lf chat", "Chat with a model in the terminal (streaming; `/image PATH`, `/video PATH`, `/audio PATH` "
        "attach a file to the next message; `clear` forgets the history, `exit` quits). "
        "--system TEXT sets the system prompt; --query TEXT answers one question and exits.",
        "Keys: see packages/lf-serve/README.md. Example: lf chat examples/inference/smollm2.yaml", argv)
    if check_only(argv):
        return print_serve_check("lf chat", source, config)
    setup_logging()
    from lf_serve.chat_cli import chat_loop
    from lf_serve.engine import load_engine

    engine = load_engine(config, source)
    try:
        return chat_loop(engine, system=flags.get("--system") or None, query=flags.get("--query") or None,
                         stream=not flags.get("--no-stream"), stdin=sys.stdin, stdout=sys.stdout)
    finally:
        engine.close()


api = Command(help="serve a model behind an OpenAI-compatible API (lf api CONFIG [key=value ...] [--check])",
              run=_run_api)
chat = Command(help="chat with a model in the terminal (lf chat CONFIG [--system S] [--query Q] [--check])",
               run=_run_chat)
