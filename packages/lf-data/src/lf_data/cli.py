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
    "estimate": "lf-train",
    "chat": "lf-serve",
    "api": "lf-serve",
    "eval": "lf-eval",
    "export": "lf-models",
    "board": "lf-board",
    "webui": "lf-board",
    "webchat": "lf-board",
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
    parser.add_argument(CHECK_FLAG, action="store_true",
                        help="check everything, print the resolved config and what would run; load no weights")
    if not argv:
        parser.print_usage(sys.stderr)
        parser.exit(2, f"{prog}: give a YAML config file and/or key=value arguments (see {prog} --help).\n")
    ns = parser.parse_args(argv)
    config_path, overrides = ns.config, list(ns.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        config_path, overrides = None, [config_path, *overrides]
    return read_config(config_path, overrides), config_path or "the command line"


CHECK_FLAG = "--check"


def check_only(argv: list[str]) -> bool:
    """Whether the command was asked only to check its config (`lf train x.yaml --check`)."""
    return CHECK_FLAG in argv


def print_check(prog: str, source: str, what: list[str], resolved: dict) -> int:
    """What `--check` prints for any command: the facts, then the resolved config as YAML."""
    import yaml

    print(f"{prog}: {source} is valid.")
    print("\n".join(f"  {line}" for line in what))
    print("\nresolved config:")
    print(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True).rstrip())
    return 0


VERBOSITY_ENV = "LF_VERBOSITY"
VERBOSITY_LEVELS = ("quiet", "info", "debug")
VERBOSITY_FLAGS = {"--quiet": "quiet", "--verbose": "debug"}
LF_LOGGERS = ("lf_data", "lf_models", "lf_serve", "lf_eval", "lf_train", "lf_board")

# Third-party messages known to be harmless where LF meets them, hidden unless LF_VERBOSITY=debug.
# Log records: (logger name, start of the message).
HARMLESS_LOG_MESSAGES: tuple[tuple[str, str], ...] = (
    # bitsandbytes, imported by peft whenever it is installed (quantised or not), on CPUs with AVX512-BF16
    # looks for an optional kernel package; without it 4-bit CPU matmuls take the slower built-in path
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    # deepspeed, imported by accelerate whenever it is installed, on a machine without a GPU (`lf env`
    # says which device training uses)
    ("DeepSpeed", "Setting accelerator to CPU"),
)
# Python warnings: (category, regular expression matching the start of the message).
HARMLESS_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # peft reads the old name of a transformers property on every adapter it attaches
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


LLAMAFACTORY_VERBOSITY = {"debug": "debug", "info": "info", "warn": "quiet", "warning": "quiet", "error": "quiet",
                          "critical": "quiet"}
"""LlamaFactory's LLAMAFACTORY_VERBOSITY (a logging level name) -> LF's verbosity, read when LF_VERBOSITY is unset."""


def verbosity() -> str:
    """How much commands print, from LF_VERBOSITY (`--quiet`/`--verbose` set it): quiet, info or debug;
    without it, from LlamaFactory's LLAMAFACTORY_VERBOSITY."""
    import os

    from lf_data.errors import ConfigError

    value = os.environ.get(VERBOSITY_ENV, "").strip().lower()
    if not value:
        theirs = os.environ.get("LLAMAFACTORY_VERBOSITY", "").strip().lower()
        if theirs and theirs not in LLAMAFACTORY_VERBOSITY:
            raise ConfigError(f"LLAMAFACTORY_VERBOSITY={theirs.upper()!r} is not one of DEBUG, INFO, WARN, ERROR "
                              f"(or set {VERBOSITY_ENV} to one of {', '.join(VERBOSITY_LEVELS)}).")
        return LLAMAFACTORY_VERBOSITY.get(theirs, "info")
    if value not in VERBOSITY_LEVELS:
        raise ConfigError(f"{VERBOSITY_ENV}={value!r} is not one of {', '.join(VERBOSITY_LEVELS)}.")
    return value


def show_progress() -> bool:
    """Whether LF draws progress bars (not under LF_VERBOSITY=quiet)."""
    return verbosity() != "quiet"


def take_verbosity_flags(argv: list[str]) -> list[str]:
    """`argv` without `--quiet`/`--verbose` (accepted anywhere on the line); the last one sets
    LF_VERBOSITY for this process and those it starts (torchrun workers)."""
    import os

    rest = []
    for arg in argv:
        if arg in VERBOSITY_FLAGS:
            os.environ[VERBOSITY_ENV] = VERBOSITY_FLAGS[arg]
        else:
            rest.append(arg)
    return rest


class _HarmlessMessageFilter:
    """Drops the records of one logger whose message starts with one of `starts`."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        self.starts = starts

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.starts)


_HARMLESS_FILTERS: dict[str, _HarmlessMessageFilter] = {}


def hide_harmless_messages(hide: bool = True) -> None:
    """Hide (or show again) the known-harmless third-party messages above; the filters sit on the
    loggers by name, so they hold for libraries imported later."""
    import logging
    import warnings

    for name in {name for name, _ in HARMLESS_LOG_MESSAGES}:
        if name not in _HARMLESS_FILTERS:
            _HARMLESS_FILTERS[name] = _HarmlessMessageFilter(
                tuple(start for logger, start in HARMLESS_LOG_MESSAGES if logger == name))
        logger = logging.getLogger(name)
        if hide:
            logger.addFilter(_HARMLESS_FILTERS[name])
        else:
            logger.removeFilter(_HARMLESS_FILTERS[name])
    for category, message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore" if hide else "default", message=message, category=category)


def setup_logging() -> None:
    """Console logging for commands that load models, the one place it is set, at LF_VERBOSITY:
    quiet: warnings and errors only, no progress bars; info (default): LF's progress, libraries'
    warnings less the known-harmless ones; debug: everything, libraries' info messages included."""
    import logging
    import os

    level = verbosity()
    lf_level = {"quiet": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}[level]
    library_level = {"quiet": logging.ERROR, "info": logging.WARNING, "debug": logging.INFO}[level]
    logging.basicConfig(level=library_level, format="[%(levelname)s|%(name)s] %(message)s")
    logging.getLogger().setLevel(library_level)  # basicConfig leaves an already configured root alone
    for name in LF_LOGGERS:
        logging.getLogger(name).setLevel(lf_level)
    hide_harmless_messages(level != "debug")
    if level == "quiet":
        import warnings

        for category in (FutureWarning, DeprecationWarning):  # addressed to developers, not to users
            warnings.filterwarnings("ignore", category=category)
        for variable in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(variable, "1")  # read when those libraries are imported (after this)
    from lf_data import tokenizer_threads

    tokenizer_threads.quiet_default()  # again for callers of setup_logging that did not come through main
    import transformers

    # the Trainer's progress bar follows this too (disable_tqdm defaults to on above WARNING)
    transformers.logging.set_verbosity(library_level)
    if level == "quiet":
        transformers.logging.disable_progress_bar()


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
    lines += ["", "Every command: --quiet or --verbose (or LF_VERBOSITY=quiet|info|debug). Commands that read a "
                  "config (train, export, eval, api, chat) take --check: validate it and say what would run.",
              "Run `lf <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = take_verbosity_flags(list(sys.argv[1:] if argv is None else argv))
    from lf_data import tokenizer_threads

    tokenizer_threads.quiet_default()  # every command, the board included: its processes fork
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
