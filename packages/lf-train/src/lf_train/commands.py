"""`lf train`: a light module (torch is imported only when the command runs)."""

from __future__ import annotations

from lf_data.cli import Command, read_command_config, setup_logging


def _run_train(argv: list[str]) -> int:
    config, source = read_command_config(
        "lf train", "Fine-tune a model from one flat YAML config; key=value arguments override its keys.",
        "Keys: see packages/lf-train/README.md. Example: lf train examples/quickstart.yaml learning_rate=1e-4", argv)
    setup_logging()
    from lf_train.run import run_train

    run_train(config, source=source)
    return 0


train = Command(help="fine-tune a model from a YAML config (lf train CONFIG [key=value ...])", run=_run_train)
