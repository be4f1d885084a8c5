"""The single `lf` entry point.

Each installed LF package contributes sub-commands through the ``lf.commands`` entry-point group.
Only the light command modules are imported here, so `lf --help` and `lf version` stay fast;
heavy libraries (torch, transformers) are imported inside the command that needs them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, version

from lf_data.errors import LFError

ENTRY_POINT_GROUP = "lf.commands"

# Every command LF knows, with the package that provides it: a command whose package is not
# installed answers with what to install instead of "unknown command".
KNOWN_COMMANDS: dict[str, str] = {
    "version": "lf-data",
    "env": "lf-data",
    "data": "lf-data",
    "train": "lf-train",
    "chat": "lf-serve",
    "api": "lf-serve",
    "eval": "lf-eval",
    "export": "lf-models",
    "board": "lf-board",
}


@dataclass(frozen=True)
class Command:
    """A sub-command: one line of help and a function from its arguments to an exit code."""

    help: str
    run: Callable[[list[str]], int]


def installed_commands() -> dict[str, Command]:
    commands = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        command = ep.load()
        if not isinstance(command, Command):
            raise TypeError(f"entry point {ep.name!r} ({ep.value}) is not an lf_data.cli.Command")
        commands[ep.name] = command
    return dict(sorted(commands.items()))


def read_command_config(prog: str, description: str, epilog: str, argv: list[str]) -> tuple[dict, str]:
    """`CONFIG [key=value ...]` (or only overrides) -> (the flat config, where it came from)."""
    import argparse

    from lf_data.config import read_config

    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    ns = parser.parse_args(argv)
    config_path, overrides = ns.config, list(ns.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        config_path, overrides = None, [config_path, *overrides]
    return read_config(config_path, overrides), config_path or "the command line"


def setup_logging() -> None:
    """Console logging for commands that load models: LF's messages at INFO, libraries at WARNING."""
    import logging
    import os

    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s|%(name)s] %(message)s")
    for name in ("lf_data", "lf_models", "lf_serve", "lf_eval", "lf_train", "lf_board"):
        logging.getLogger(name).setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_warning()


def installed_version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def usage(commands: dict[str, Command]) -> str:
    lines = ["usage: lf <command> [args ...]", "", "commands:"]
    width = max(len(name) for name in KNOWN_COMMANDS | commands)
    for name, command in commands.items():
        lines.append(f"  {name:<{width}}  {command.help}")
    missing = sorted(set(KNOWN_COMMANDS) - set(commands))
    if missing:
        lines += ["", "not installed here:"]
        lines += [f"  {name:<{width}}  pip install {KNOWN_COMMANDS[name]}" for name in missing]
    lines += ["", "Run `lf <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = installed_commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(commands))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in ("-V", "--version"):
        name, rest = "version", []
    if name not in commands:
        if name in KNOWN_COMMANDS:
            dist = KNOWN_COMMANDS[name]
            installed = installed_version(dist)
            if installed is None:
                print(f"lf {name} is provided by {dist}, which is not installed: pip install {dist}",
                      file=sys.stderr)
            else:
                print(f"lf {name} is not in the installed {dist} {installed}; upgrade it: "
                      f"pip install -U {dist}", file=sys.stderr)
        else:
            import difflib

            close = difflib.get_close_matches(name, list(commands), n=1)
            hint = f" Did you mean `lf {close[0]}`?" if close else ""
            print(f"lf: unknown command {name!r}.{hint} Run `lf --help` for the list.", file=sys.stderr)
        return 2
    try:
        return commands[name].run(rest)
    except LFError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m lf_data.cli`: run the imported module's main, whose Command class is the one
    # the entry points were built with (this file's copy under __main__ is a different class)
    from lf_data.cli import main as lf_main

    sys.exit(lf_main())
