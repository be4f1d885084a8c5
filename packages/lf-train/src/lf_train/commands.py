"""`lf train`: a light module (torch is imported only when the command runs)."""

from __future__ import annotations

from lf_data.cli import Command, read_command_config, setup_logging


def _run_train(argv: list[str]) -> int:
    config, source = read_command_config(
        "lf train", "Fine-tune a model from one flat YAML config; key=value arguments override its keys.",
        "Keys: see packages/lf-train/README.md. Example: lf train examples/quickstart.yaml learning_rate=1e-4. "
        "Several processes: NPROC_PER_NODE=2 lf train x.yaml (and NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT).",
        argv)
    setup_logging()
    from lf_train.launch import run_torchrun, torchrun_command

    command = torchrun_command(argv)
    if command is not None:
        from lf_train.run import parse_train_config

        parse_train_config(config, source)  # one clear error now rather than one per process
        return run_torchrun(command)
    from lf_train.run import run_train

    run_train(config, source=source)
    return 0


train = Command(help="fine-tune a model from a YAML config (lf train CONFIG [key=value ...])", run=_run_train)
