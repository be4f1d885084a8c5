"""More than one process: `lf train` re-launches itself under torchrun when asked to.

The environment variables are the ones users of the anchor system already set:
`NPROC_PER_NODE` (processes on this machine), `NNODES`, `NODE_RANK`, `MASTER_ADDR`,
`MASTER_PORT`; `FORCE_TORCHRUN=1` launches even one process through torchrun. A run started by
the user under `torchrun`, `accelerate launch` or `deepspeed` (which set `LOCAL_RANK`) is left
alone. The config is checked once, before any process starts, so a typo is one clear error
instead of one per process.
"""

from __future__ import annotations

import os
import subprocess
import sys

LAUNCH_VARS = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def _int_env(name: str, default: int) -> int:
    from lf_data.errors import ConfigError

    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} must be a whole number.") from None
    if number < (0 if name == "NODE_RANK" else 1):
        raise ConfigError(f"environment variable {name}={value} is out of range.")
    return number


def launched_by_user() -> bool:
    return "LOCAL_RANK" in os.environ


def torchrun_command(argv: list[str]) -> list[str] | None:
    """The torchrun command line for this run, or None when it runs in this process."""
    if launched_by_user():
        return None
    nproc, nnodes = _int_env("NPROC_PER_NODE", 1), _int_env("NNODES", 1)
    node_rank = _int_env("NODE_RANK", 0)
    force = os.environ.get("FORCE_TORCHRUN", "").lower() in ("1", "true", "yes")
    if nproc == 1 and nnodes == 1 and not force:
        return None
    if node_rank >= nnodes:
        from lf_data.errors import ConfigError

        raise ConfigError(f"NODE_RANK={node_rank} must be smaller than NNODES={nnodes}.")
    master_port = _int_env("MASTER_PORT", 0) or _free_port()
    return [sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--nproc_per_node={nproc}",
            f"--master_addr={os.environ.get('MASTER_ADDR', '127.0.0.1')}", f"--master_port={master_port}",
            "-m", "lf_train.launch", *argv]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_torchrun(command: list[str]) -> int:
    import logging

    logging.getLogger(__name__).info("launching %s", " ".join(command))
    from lf_data import tokenizer_threads

    # one process per node tokenises (`main_process_first`) while the others wait: it may use every core
    env = tokenizer_threads.for_child({**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    return subprocess.run(command, env=env, check=False).returncode


def main() -> int:
    """One worker process started by torchrun: `python -m lf_train.launch CONFIG [key=value ...]`."""
    from lf_data.cli import main as lf

    return lf(["train", *sys.argv[1:]])


def close_process_group(wait: bool) -> None:
    """Leave the process group together: a worker that exits while another still saves can kill
    gloo's threads mid-flight ("terminate called without an active exception", exit -6)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
