"""More than one process: `lf train` re-launches itself under torchrun when asked to.

The environment variables are the ones users of the anchor system already set:
`NPROC_PER_NODE` (processes on this machine; default: one per visible GPU when there are several, as
LlamaFactory does), `NNODES`, `NODE_RANK`, `MASTER_ADDR`, `MASTER_PORT`; `FORCE_TORCHRUN=1` launches
even one process through torchrun. `RDZV_ID` makes it an elastic launch (c10d rendezvous at
MASTER_ADDR:MASTER_PORT, `MIN_NNODES`:`MAX_NNODES` nodes, `MAX_RESTARTS` restarts, each resuming from
the run's last checkpoint). A run started by the user under `torchrun`, `accelerate launch` or
`deepspeed` (which set `LOCAL_RANK`) is left alone. The config is checked once, before any process
starts, so a typo is one clear error instead of one per process.
"""

from __future__ import annotations

import os
import subprocess
import sys

LAUNCH_VARS = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "RDZV_ID", "MIN_NNODES",
               "MAX_NNODES", "MAX_RESTARTS")
CUDA_DEFAULTS = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TORCH_NCCL_AVOID_RECORD_STREAMS": "1"}
"""What LlamaFactory gives torchrun's GPU workers unless OPTIM_TORCH=0: less fragmented CUDA memory, and
NCCL not holding buffers for record_stream; a value the user set is kept."""


def _int_env(name: str, default: int) -> int:
    from lf_data.errors import ConfigError

    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} must be a whole number.") from None
    if number < (0 if name in ("NODE_RANK", "MAX_RESTARTS") else 1):
        raise ConfigError(f"environment variable {name}={value} is out of range.")
    return number


def launched_by_user() -> bool:
    return "LOCAL_RANK" in os.environ


GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dri")
"""Device files of NVIDIA's, AMD's and Intel's GPU drivers: without any of them there is no GPU to count."""


def visible_devices() -> int:
    """Accelerators this process sees (GPUs; 0 on a CPU machine). Counting imports torch, so on a machine
    without a GPU driver the answer is 0 without it: a config mistake still answers before torch loads."""
    if "torch" not in sys.modules and not any(os.path.exists(path) for path in GPU_DRIVER_FILES):
        return 0  # (a Mac's one MPS device launches one process either way)
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        return accelerator.device_count()
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _truthy(name: str, default: str = "") -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "y", "yes")


def planned_processes() -> int:
    """How many processes the run will have in all: torchrun's WORLD_SIZE inside a worker, else
    NPROC_PER_NODE (default: the visible GPUs, at least one) times NNODES. The checks and the estimate
    that depend on it (grpo's groups, ZeRO's shards) use this, as the launch does."""
    if os.environ.get("WORLD_SIZE"):
        return _int_env("WORLD_SIZE", 1)
    return (_int_env("NPROC_PER_NODE", 0) or max(1, visible_devices())) * _int_env("NNODES", 1)


def torchrun_command(argv: list[str]) -> list[str] | None:
    """The torchrun command line for this run, or None when it runs in this process."""
    if launched_by_user():
        return None
    from lf_data.errors import ConfigError

    nproc, nnodes = _int_env("NPROC_PER_NODE", 0), _int_env("NNODES", 1)
    node_rank, max_restarts = _int_env("NODE_RANK", 0), _int_env("MAX_RESTARTS", 0)
    low, high = _int_env("MIN_NNODES", 0), _int_env("MAX_NNODES", 0)
    rdzv_id = os.environ.get("RDZV_ID", "").strip()
    if rdzv_id and (bool(low) != bool(high) or low > high):
        raise ConfigError(f"MIN_NNODES={low or 'unset'} and MAX_NNODES={high or 'unset'}: set both, "
                          "MIN_NNODES <= MAX_NNODES, for an elastic number of nodes (or neither).")
    if not rdzv_id:
        for name in ("MIN_NNODES", "MAX_NNODES", "MAX_RESTARTS"):
            if _int_env(name, 0):  # MAX_RESTARTS=0 is what LlamaFactory assumes anyway
                raise ConfigError(f"{name} is for an elastic launch: set RDZV_ID (a name shared by every node) "
                                  f"too, or unset {name}.")
    if not nproc:  # LlamaFactory's default: every visible GPU, one process each
        nproc = max(1, visible_devices())
    if nproc == 1 and nnodes == 1 and not rdzv_id and not _truthy("FORCE_TORCHRUN"):
        return None
    if not rdzv_id and node_rank >= nnodes:  # an elastic launch numbers its nodes itself
        raise ConfigError(f"NODE_RANK={node_rank} must be smaller than NNODES={nnodes}.")
    if max(nnodes, high) > 1 and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise ConfigError(f"{max(nnodes, high)} nodes: set MASTER_ADDR and MASTER_PORT to the first node's address "
                          "and a free port there, the same on every node.")
    master_addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    master_port = _int_env("MASTER_PORT", 0) or _free_port()
    if rdzv_id:
        nodes = f"{low}:{high}" if low else str(nnodes)
        return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc_per_node={nproc}",
                f"--rdzv_id={rdzv_id}", "--rdzv_backend=c10d", f"--rdzv_endpoint={master_addr}:{master_port}",
                f"--max_restarts={max_restarts}", "-m", "lf_train.launch", *argv]
    return [sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--nproc_per_node={nproc}",
            f"--master_addr={master_addr}", f"--master_port={master_port}",
            "-m", "lf_train.launch", *argv]


def restarted() -> bool:
    """Whether torchrun restarted this worker after a failure (TORCHELASTIC_RESTART_COUNT counts this node's
    restarts: a node whose workers did not fail reads 0 after another node's restart)."""
    count = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0").strip()
    return count.isdigit() and int(count) > 0


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
    if _truthy("OPTIM_TORCH", "1"):  # LlamaFactory's rule: on unless set to something else than 1/true/y
        env = {**CUDA_DEFAULTS, **env}
    if any(arg.startswith("--rdzv_id=") for arg in command):
        # restarted workers hang in init_process_group when they share the rendezvous' TCP store
        # (pytorch/pytorch#135712; seen here with torch 2.15 and gloo): each round gets its own
        env = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", **env}
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
