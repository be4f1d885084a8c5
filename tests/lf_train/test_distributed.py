"""More than one process on a CPU: `NPROC_PER_NODE=2 lf train` launches two gloo workers through
torchrun (elastic with RDZV_ID, restarting a lost worker), and they train to the pinned two-process losses,
which are one process's with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import LOSS_TOLERANCE, TWO_PROCESS_LOSSES, losses

from lf_data.cli import main as lf
from lf_data.errors import ConfigError

LF = [sys.executable, "-m", "lf_data.cli"]


def run_lf(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LF, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


# Loaded by every worker's interpreter (sitecustomize): on the first attempt, rank 1 SIGKILLs itself once it
# has logged step 4 (checkpoint-3 is saved), as a worker lost to a crash or an out-of-memory kill would be.
CRASH_ONCE = """
import os, signal
if os.environ.get("LOCAL_RANK") == "1" and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0":
    from lf_train.callbacks import JsonlLogCallback
    log = JsonlLogCallback.on_log
    def on_log(self, args, state, control, logs=None, **kw):
        log(self, args, state, control, logs=logs, **kw)
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGKILL)
    JsonlLogCallback.on_log = on_log
"""


def test_two_processes_resume_to_the_same_losses_after_a_lost_worker(base_config, write_config, tmp_path):
    """An elastic launch (RDZV_ID) whose rank 1 dies after checkpoint-3: torchrun restarts both workers, they
    resume from the checkpoint, and the losses are those of two processes never interrupted (which match one
    process's: train_helpers.TWO_PROCESS_LOSSES). torchrun's static launch, without RDZV_ID, trains in the
    DeepSpeed tests below."""
    base_config.update(max_steps=6, save_steps=3, per_device_train_batch_size=2, lora_dropout=0.0)
    two = tmp_path / "two"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASH_ONCE)
    proc = run_lf(["train", str(write_config(**base_config)), f"output_dir={two}"],
                  NPROC_PER_NODE="2", RDZV_ID="lf-test", MAX_RESTARTS="1", PYTHONPATH=str(hook))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "torch.distributed.run" in proc.stderr and "--rdzv_backend=c10d" in proc.stderr  # really through torchrun
    assert "exitcode: -9" in proc.stderr  # and a worker was lost
    records = [json.loads(line) for line in (two / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]  # step 4 logged again, once
    assert json.loads((two / "trainer_state.json").read_text())["global_step"] == 6
    assert losses(two) == pytest.approx(TWO_PROCESS_LOSSES, abs=LOSS_TOLERANCE)
    # one set of artefacts, written by the main process
    assert (two / "adapter_model.safetensors").is_file() and (two / "lf_config.yaml").is_file()
    assert sorted(p.name for p in two.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]


def test_launch_environment_is_checked_before_anything_starts(base_config, write_config, tmp_path, monkeypatch,
                                                             capsys):
    # in this process: had the checks not run before launching, torchrun's workers would report the
    # errors on their own stderr, not on this one (and the launch itself is tested above)
    monkeypatch.setenv("NPROC_PER_NODE", "two")
    assert lf(["train", str(write_config(**base_config))]) != 0
    assert "NPROC_PER_NODE='two' must be a whole number" in capsys.readouterr().err
    monkeypatch.setenv("NPROC_PER_NODE", "2")
    assert lf(["train", str(write_config(**base_config)), "lora_rnak=4"]) != 0
    assert capsys.readouterr().err.count("unknown config key 'lora_rnak'") == 1  # checked once, before launching
    assert not (tmp_path / "out").exists()


DEEPSPEED = Path(__file__).resolve().parents[2] / "examples" / "deepspeed"
ABORT = "terminate called without an active exception"


@pytest.mark.parametrize("config", ["ds_z2_config.json", "ds_z3_config.json"])
def test_deepspeed_zero_trains_on_cpu(config, base_config, write_config, tmp_path):
    base_config.update(max_steps=6, save_steps=3, per_device_train_batch_size=2, lora_dropout=0.0,
                       deepspeed=str(DEEPSPEED / config))
    out = tmp_path / "out"
    # DeepSpeed would compile its CPU shared-memory op (inference only) here, about a minute of g++: LF skips it
    extensions = tmp_path / "torch_extensions"
    proc = run_lf(["train", str(write_config(**base_config)), f"output_dir={out}"], NPROC_PER_NODE="2",
                  TORCH_EXTENSIONS_DIR=str(extensions))
    if proc.returncode != 0 and ABORT in proc.stderr and "Traceback" not in proc.stderr.split(ABORT)[0][-2000:]:
        # a rare native abort of a gloo worker thread as DeepSpeed starts on CPU (seen about once in 20 runs,
        # never with a Python error before it): run once more; any other failure, or a second abort, fails
        proc = run_lf(["train", str(write_config(**base_config)), f"output_dir={out}", "overwrite_output_dir=true"],
                      NPROC_PER_NODE="2", TORCH_EXTENSIONS_DIR=str(extensions))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not extensions.exists() or not any(extensions.iterdir())  # nothing compiled
    run = losses(out)
    assert len(run) == 6 and run[-1] < run[0] - 0.5
    from safetensors.torch import load_file

    adapter = load_file(out / "adapter_model.safetensors")  # whole matrices, gathered from the partitions
    assert adapter and all(t.numel() > 0 and 8 in t.shape for t in adapter.values())
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]


def test_torchrun_workers_choose_their_tokenizer_threads_unless_the_user_did(monkeypatch):
    from lf_data import tokenizer_threads
    from lf_train import launch

    envs = []
    monkeypatch.setattr(launch.subprocess, "run", lambda command, env, check: envs.append(env) or
                        subprocess.CompletedProcess(command, 0))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setattr(tokenizer_threads, "_set_by_lf", True)  # `lf`'s start-up default: the workers decide
    assert launch.run_torchrun(["torchrun", "x"]) == 0
    monkeypatch.setattr(tokenizer_threads, "_set_by_lf", False)  # the user's: passed on
    launch.run_torchrun(["torchrun", "x"])
    assert "TOKENIZERS_PARALLELISM" not in envs[0] and envs[1]["TOKENIZERS_PARALLELISM"] == "false"
    assert envs[0]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", "1")


@pytest.fixture
def launch_env(monkeypatch):
    """No launch variable of the developer's own shell: each test sets what it needs."""
    from lf_train import launch

    for name in (*launch.LAUNCH_VARS, "FORCE_TORCHRUN", "LOCAL_RANK", "WORLD_SIZE", "OPTIM_TORCH",
                 *launch.CUDA_DEFAULTS):
        monkeypatch.delenv(name, raising=False)
    return launch


@pytest.mark.parametrize(("devices", "expected"), [(0, None), (1, None), (4, "--nproc_per_node=4")])
def test_every_visible_gpu_gets_a_process_unless_nproc_per_node_says_otherwise(devices, expected, launch_env,
                                                                              monkeypatch):
    monkeypatch.setattr(launch_env, "visible_devices", lambda: devices)
    command = launch_env.torchrun_command(["x.yaml"])
    assert (command and command[command.index("--nnodes=1") + 2]) == expected  # LlamaFactory's default
    monkeypatch.setenv("NPROC_PER_NODE", "1")
    assert launch_env.torchrun_command(["x.yaml"]) is None  # the user's choice wins


def test_rdzv_id_makes_an_elastic_launch(launch_env, monkeypatch):
    for name, value in {"RDZV_ID": "job7", "NNODES": "2", "MIN_NNODES": "1", "MAX_NNODES": "2", "MAX_RESTARTS": "3",
                        "NPROC_PER_NODE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    command = launch_env.torchrun_command(["x.yaml", "lr=1"])
    assert command[3:] == ["--nnodes=1:2", "--nproc_per_node=2", "--rdzv_id=job7", "--rdzv_backend=c10d",
                           "--rdzv_endpoint=10.0.0.1:29500", "--max_restarts=3", "-m", "lf_train.launch", "x.yaml",
                           "lr=1"]
    monkeypatch.delenv("MIN_NNODES")
    with pytest.raises(ConfigError, match="MIN_NNODES=unset and MAX_NNODES=2: set both"):
        launch_env.torchrun_command(["x.yaml"])
    monkeypatch.delenv("RDZV_ID")
    with pytest.raises(ConfigError, match="MAX_NNODES is for an elastic launch: set RDZV_ID"):
        launch_env.torchrun_command(["x.yaml"])
    monkeypatch.delenv("MAX_NNODES")
    monkeypatch.delenv("MAX_RESTARTS")
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(ConfigError, match="2 nodes: set MASTER_ADDR and MASTER_PORT"):
        launch_env.torchrun_command(["x.yaml"])


def test_elastic_launches_follow_their_own_rules(launch_env, monkeypatch):
    monkeypatch.setattr(launch_env, "visible_devices", lambda: 0)
    monkeypatch.setenv("RDZV_ID", "job7")
    command = launch_env.torchrun_command(["x.yaml"])  # one process, but restartable: through torchrun
    assert "--nproc_per_node=1" in command and "--max_restarts=0" in command
    for name, value in {"MIN_NNODES": "1", "MAX_NNODES": "4", "NODE_RANK": "3"}.items():
        monkeypatch.setenv(name, value)  # NNODES unset: the node count comes from the range
    with pytest.raises(ConfigError, match="4 nodes: set MASTER_ADDR and MASTER_PORT"):
        launch_env.torchrun_command(["x.yaml"])
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert "--nnodes=1:4" in launch_env.torchrun_command(["x.yaml"])  # NODE_RANK is the rendezvous' to choose


def test_a_machine_without_a_gpu_driver_counts_no_gpu_without_importing_torch(launch_env):
    code = "import sys; from lf_train.launch import visible_devices; print(visible_devices(), 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if any(os.path.exists(path) for path in launch_env.GPU_DRIVER_FILES):
        pytest.skip("this machine has a GPU driver: counting its GPUs imports torch")
    assert done.stdout.split() == ["0", "False"], done.stderr


def test_planned_processes_is_what_the_launch_will_start(launch_env, monkeypatch):
    monkeypatch.setattr(launch_env, "visible_devices", lambda: 4)
    assert launch_env.planned_processes() == 4
    monkeypatch.setenv("NNODES", "2")
    assert launch_env.planned_processes() == 8
    monkeypatch.setenv("NPROC_PER_NODE", "2")
    assert launch_env.planned_processes() == 4
    monkeypatch.setenv("WORLD_SIZE", "3")  # inside a worker: torchrun's own count
    assert launch_env.planned_processes() == 3


def test_gpu_workers_get_llamafactorys_cuda_settings_unless_told_otherwise(launch_env, monkeypatch):
    envs = []
    monkeypatch.setattr(launch_env.subprocess, "run", lambda command, env, check: envs.append(env) or
                        subprocess.CompletedProcess(command, 0))
    launch_env.run_torchrun(["torchrun", "x"])
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    launch_env.run_torchrun(["torchrun", "x"])
    monkeypatch.setenv("OPTIM_TORCH", "off")  # LlamaFactory's rule: on only for 1, true or y
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    launch_env.run_torchrun(["torchrun", "x"])
    assert envs[0]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert envs[0]["TORCH_NCCL_AVOID_RECORD_STREAMS"] == "1"
    assert envs[1]["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"  # the user's value kept
    assert "PYTORCH_CUDA_ALLOC_CONF" not in envs[2] and "TORCH_NCCL_AVOID_RECORD_STREAMS" not in envs[2]

