"""`lf train`: a light module (torch is imported only when the command runs)."""

from __future__ import annotations

import argparse

from lf_data.cli import Command


def _run_train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lf train",
        description="Fine-tune a model from one flat YAML config; key=value arguments override its keys.",
        epilog="Keys: see packages/lf-train/README.md. Example: lf train examples/quickstart.yaml learning_rate=1e-4",
    )
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    ns = parser.parse_args(argv)
    config_path, overrides = ns.config, list(ns.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        config_path, overrides = None, [config_path, *overrides]

    from lf_data.config import read_config
    from lf_train.logs import setup_logging

    config = read_config(config_path, overrides)
    setup_logging()
    from lf_train.run import run_train

    run_train(config, source=config_path or "the command line")
    return 0


train = Command(help="fine-tune a model from a YAML config (lf train CONFIG [key=value ...])", run=_run_train)
