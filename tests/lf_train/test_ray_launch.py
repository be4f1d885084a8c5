"""`USE_RAY=1 lf train`: LlamaFactory's Ray launch. Two Ray Train workers on a local cluster train to
the losses two torchrun processes reach with the same global batch; the Ray keys are checked before
anything starts; the launch hands Ray Train what the config says (a stand-in `ray` checks that fast)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path

import pytest
import yaml
from train_helpers import LOSS_TOLERANCE, TWO_PROCESS_LOSSES, losses

from lf_data.cli import main as lf
from lf_data.errors import ConfigError
from lf_train import ray_launch
from lf_train.plan import check_train_config

LF = [sys.executable, "-m", "lf_data.cli"]


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (every process of a Ray cluster inherits it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_two_ray_workers_match_two_torchrun_processes(base_config, write_config, tmp_path):
    ray_temp = Path(tempfile.mkdtemp(prefix="lfray", dir="/tmp"))  # Ray's socket paths must stay short
    marker = f"LF_RAY_TEST={uuid.uuid4().hex}"
    base_config.update(max_steps=6, save_steps=3, per_device_train_batch_size=2, lora_dropout=0.0,
                       ray_num_workers=2, ray_run_name="tiny", ray_storage_path=str(tmp_path / "ray"),
                       ray_init_kwargs={"num_cpus": 2, "include_dashboard": False, "_temp_dir": str(ray_temp)})
    out = tmp_path / "out"
    name, value = marker.split("=")
    env = {**os.environ, "USE_RAY": "1", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", name: value}  # no `uv run` re-sync inside the workers
    try:
        proc = subprocess.run([*LF, "train", str(write_config(**base_config)), f"output_dir={out}"],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "Ray Train: 2 workers" in proc.stderr and "RayTrainWorker" in proc.stderr  # it really went through Ray
        # Ray Train gives its workers torchrun's process group, so torchrun's numbers
        assert losses(out) == pytest.approx(TWO_PROCESS_LOSSES, abs=LOSS_TOLERANCE)
        # the run's files land in output_dir, written once (rank 0), as under torchrun
        assert (out / "adapter_model.safetensors").is_file()
        assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
        assert yaml.safe_load((out / "lf_config.yaml").read_text())["ray_num_workers"] == 2
        # Ray's storage holds only its bookkeeping
        assert [p.name for p in (tmp_path / "ray").iterdir()] == ["tiny"]
        assert not list((tmp_path / "ray").rglob("*.safetensors"))
        deadline = time.monotonic() + 20  # ray.shutdown stopped the cluster it started
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_with(marker) == []
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


@pytest.mark.parametrize(("override", "message"), [
    ("ray_num_workers=0", "ray_num_workers=0 must be at least 1"),
    ("resources_per_worker={CPU: many}", "resources_per_worker['CPU']='many' must be a number"),
    ("resources_per_worker=4", "resources_per_worker must be a mapping"),
    ("placement_strategy=PAK", "placement_strategy='PAK' is not a valid choice; use one of PACK, SPREAD, "
                               "STRICT_PACK, STRICT_SPREAD. Did you mean 'PACK'?"),
    ("ray_init_kwargs=num_cpus", "ray_init_kwargs must be a mapping"),
    ("master_port=70000", "master_port='70000' must be a port number from 1 to 65535"),
    ("ray_storage_filesystem=hdfs", "ray_storage_filesystem='hdfs' is not a valid choice"),
])
def test_bad_ray_values_are_one_line_naming_the_key(override, message, base_config, write_config, capsys):
    assert lf(["train", str(write_config(**base_config)), override, "--check"]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_ray_values_are_typed_as_in_llamafactory(base_config):
    base_config.update(ray_init_kwargs='{"num_cpus": 4, "runtime_env": {"env_vars": {"A": "1"}}}',
                       resources_per_worker='{"CPU": 2, "GPU": 1}', master_port=29500, ray_num_workers="4")
    ray = check_train_config(base_config).ray
    assert ray.ray_init_kwargs == {"num_cpus": 4, "runtime_env": {"env_vars": {"A": "1"}}}
    assert ray.resources_per_worker == {"CPU": 2, "GPU": 1}
    assert (ray.master_port, ray.ray_num_workers, ray.placement_strategy) == ("29500", 4, "PACK")
    # the keys of LlamaFactory 0.9.2-0.9.4 recipes are read too
    old = {**base_config, "ray_run_name": "run", "ray_storage_path": "s3://bucket/ray", "ray_storage_filesystem": "s3",
           "placement_strategy": "SPREAD"}
    assert check_train_config(old).ray.ray_storage_filesystem == "s3"


def test_use_ray_without_ray_names_the_extra(base_config, write_config, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("USE_RAY", "1")
    monkeypatch.setattr(ray_launch, "_ray_installed", lambda: False)
    assert lf(["train", str(write_config(**base_config))]) == 1
    err = capsys.readouterr().err
    assert err == ("error: USE_RAY=1 launches the training through Ray Train, which is not installed: "
                   "pip install 'lf-train[ray]' (or unset USE_RAY).\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("NPROC_PER_NODE", "2", "USE_RAY=1 and NPROC_PER_NODE both ask for several processes"),
    ("FORCE_TORCHRUN", "1", "USE_RAY=1 and FORCE_TORCHRUN both ask for several processes"),
    ("LOCAL_RANK", "0", "USE_RAY=1 inside a process started by torchrun"),
])
def test_ray_and_torchrun_together_are_refused(variable, value, message, base_config, write_config, monkeypatch,
                                               tmp_path, capsys):
    monkeypatch.setenv("USE_RAY", "1")
    monkeypatch.setenv(variable, value)
    assert lf(["train", str(write_config(**base_config))]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ray_num_workers_without_use_ray_trains_here_and_says_so(monkeypatch, caplog):
    monkeypatch.delenv("USE_RAY", raising=False)
    with caplog.at_level(logging.WARNING, logger="lf_train.ray_launch"):
        assert not ray_launch.wants_ray(ray_launch.RayArguments(ray_num_workers=4))
    assert "ray_num_workers=4 is read only with USE_RAY=1" in caplog.text
    monkeypatch.setenv("USE_RAY", "true")
    assert ray_launch.wants_ray(ray_launch.RayArguments())


class FakeRay:
    """The parts of `ray` the launch uses, recording what it is handed."""

    def __init__(self, cluster: dict[str, float], fail_with: Exception | None = None) -> None:
        self.cluster, self.fail_with, self.calls = cluster, fail_with, []
        self.initialized = False
        fake = self

        class TrainingFailedError(Exception):
            pass

        def init(address=None, *, num_cpus=None, num_gpus=None, include_dashboard=None, runtime_env=None,
                 **kwargs):
            fake.calls.append(("init", {"address": address, "num_cpus": num_cpus}))
            fake.initialized = True

        def shutdown():
            fake.calls.append(("shutdown", {}))
            fake.initialized = False

        class TorchTrainer:
            def __init__(self, fn, train_loop_config, scaling_config, torch_config, run_config):
                fake.calls.append(("trainer", {"config": train_loop_config, "scaling": scaling_config,
                                               "torch": torch_config, "run": run_config}))

            def fit(self):
                if fake.fail_with is not None:
                    error = TrainingFailedError("Training failed due to worker errors")
                    error.worker_failures = {1: ValueError("other"), 0: fake.fail_with}
                    raise error

        self.TrainingFailedError = TrainingFailedError
        self.modules = {
            "ray": types.SimpleNamespace(init=init, shutdown=shutdown, is_initialized=lambda: fake.initialized,
                                         cluster_resources=lambda: fake.cluster),
            "ray.train": types.SimpleNamespace(ScalingConfig=lambda **kw: kw, RunConfig=lambda **kw: kw,
                                               TrainingFailedError=TrainingFailedError),
            "ray.train.torch": types.SimpleNamespace(TorchTrainer=TorchTrainer, TorchConfig=lambda **kw: kw),
        }

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)

    def call(self, kind: str) -> dict:
        return next(args for name, args in self.calls if name == kind)


def _plan(base_config: dict, **ray_keys):
    return check_train_config({**base_config, **ray_keys})


def test_launch_hands_ray_train_the_config(base_config, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    fake = FakeRay({"CPU": 16, "GPU": 4})
    fake.install(monkeypatch)
    plan = _plan(base_config, ray_num_workers=4, ray_run_name="run", ray_storage_path="ray",
                 ray_init_kwargs={"num_cpus": 16}, placement_strategy="SPREAD", resources_per_worker={"CPU": 4},
                 ddp_timeout=180000000)
    assert ray_launch.run_on_ray(plan, base_config, "run.yaml") == 0
    assert [name for name, _ in fake.calls] == ["init", "trainer", "shutdown"]  # shut down: it started the cluster
    assert fake.call("init") == {"address": None, "num_cpus": 16}
    trainer = fake.call("trainer")
    assert trainer["scaling"] == {"num_workers": 4, "use_gpu": True, "resources_per_worker": {"CPU": 4},
                                  "placement_strategy": "SPREAD"}  # the cluster has GPUs: one per worker
    assert trainer["torch"] == {"timeout_s": 180000000}  # Ray Train opens the process group: the recipe's timeout
    assert trainer["run"] == {"name": "run", "storage_path": str(tmp_path / "ray"), "storage_filesystem": None}
    sent = trainer["config"]
    assert sent["cwd"] == str(tmp_path) and sent["source"] == "run.yaml"
    assert sent["plan"].training_args is None  # each worker builds its TrainingArguments in its own process group
    assert sent["plan"].hf["output_dir"] == base_config["output_dir"]


def test_launch_refuses_what_ray_cannot_do(base_config, monkeypatch):
    fake = FakeRay({"CPU": 2})
    fake.install(monkeypatch)
    with pytest.raises(ConfigError, match=r"ray_num_workers=4 workers with \{'CPU': 1\} each need CPU 4 "
                                          r"\(cluster has 2\)\. Lower ray_num_workers"):
        ray_launch.run_on_ray(_plan(base_config, ray_num_workers=4), base_config)
    assert fake.calls[-1][0] == "shutdown" and not fake.initialized
    with pytest.raises(ConfigError, match="ray_init_kwargs: 'num_cpu' is not an argument of ray.init; did you mean "
                                          "'num_cpus'?"):
        ray_launch.run_on_ray(_plan(base_config, ray_init_kwargs={"num_cpu": 2}), base_config)
    # a worker's LF error reaches the user as its own one line, not as Ray's traceback
    fake.fail_with = ConfigError("the worker's message")
    with pytest.raises(ConfigError, match="^the worker's message$"):
        ray_launch.run_on_ray(_plan(base_config, resources_per_worker={"CPU": 1, "GPU": 0}), base_config)
    assert fake.call("trainer")["scaling"]["use_gpu"] is False
    assert not fake.initialized
