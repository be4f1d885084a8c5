"""Several workers through Ray Train: `USE_RAY=1 lf train x.yaml`.

As in LlamaFactory, the `USE_RAY` environment variable switches Ray on (`ray_num_workers` alone does
not). The config is checked once, in the process the user started; then `ray.init(**ray_init_kwargs)`
joins a running cluster (`address`) or starts a local one, and `ray.train.torch.TorchTrainer` runs
`lf_train.run.run_train` in `ray_num_workers` workers. Ray Train gives each worker the environment
torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and its process group (gloo on CPUs,
NCCL on GPUs), so the Hugging Face Trainer runs exactly as under torchrun: rank 0 writes output_dir,
checkpoints and the log. Ray's own storage (`ray_storage_path`/`ray_run_name`) only receives Ray's
bookkeeping. Nothing here imports ray or torch at module level: checking a config stays light.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from lf_data.config import AtLeastOne, section
from lf_data.errors import ConfigError, LFError

if TYPE_CHECKING:
    from lf_train.plan import TrainPlan

logger = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'lf-train[ray]'"
PlacementStrategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
_TRUE = ("1", "true", "y", "yes")


def use_ray() -> bool:
    """Whether `USE_RAY` asks for a Ray launch (LlamaFactory's switch; 1, true, y or yes)."""
    return os.environ.get("USE_RAY", "").strip().lower() in _TRUE


def _ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _mapping(key: str, value: Any) -> dict[str, Any] | None:
    """A mapping given in YAML, or as JSON text (how LlamaFactory's command line passes one)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"{key} must be a mapping (YAML, or JSON text such as '{{\"num_cpus\": 8}}'), "
                              f"got {value!r}.") from None
    if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"{key} must be a mapping of names to values, got {value!r}.")
    return dict(value)


@section
class RayArguments:
    ray_num_workers: Annotated[int, AtLeastOne] = 1
    """Ray Train workers (processes) with USE_RAY=1; each takes one GPU where the cluster has GPUs."""
    ray_init_kwargs: dict[str, Any] | str | None = None
    """Arguments of `ray.init` (mapping or JSON text): `address` joins a running cluster, else a local one starts."""
    master_addr: str | None = None
    """LlamaFactory's rendezvous address; Ray Train sets its own (worker 0's node), so LF only warns when set."""
    master_port: str | None = None
    """LlamaFactory's rendezvous port; Ray Train picks a free one on worker 0's node, so LF only warns when set."""
    ray_run_name: str | None = None
    """Name of the Ray Train run: its bookkeeping goes to `<ray_storage_path>/<ray_run_name>` (default: Ray's name)."""
    ray_storage_path: str = "./saves"
    """Where Ray Train keeps its bookkeeping (a shared path or bucket on several nodes); the run's files go to output_dir."""
    ray_storage_filesystem: Literal["s3", "gs", "gcs"] | None = None
    """ray_storage_path is a bucket on S3 (`s3`) or Google Cloud Storage (`gs`, `gcs`) instead of a local folder."""
    resources_per_worker: dict[str, float] | str | None = None
    """Ray resources each worker reserves, e.g. {"CPU": 4, "GPU": 1} (default: 1 GPU, or 1 CPU without GPUs)."""
    placement_strategy: PlacementStrategy = "PACK"
    """How Ray places the workers on nodes: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD."""

    def __post_init__(self) -> None:
        self.ray_init_kwargs = _mapping("ray_init_kwargs", self.ray_init_kwargs)
        resources = _mapping("resources_per_worker", self.resources_per_worker)
        if resources is not None:
            for name, amount in resources.items():
                if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                    raise ConfigError(f"resources_per_worker[{name!r}]={amount!r} must be a number of at least 0 "
                                      "(e.g. resources_per_worker: {CPU: 4, GPU: 1}).")
        self.resources_per_worker = resources
        if self.placement_strategy not in get_args(PlacementStrategy):
            raise ConfigError(f"placement_strategy={self.placement_strategy!r} is not a valid choice; use one of "
                              f"{', '.join(get_args(PlacementStrategy))}.")
        if self.master_port is not None:
            port = str(self.master_port)
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"master_port={self.master_port!r} must be a port number from 1 to 65535.")
            self.master_port = port
        if use_ray() and not _ray_installed():
            raise ConfigError(f"USE_RAY=1 launches the training through Ray Train, which is not installed: "
                              f"{INSTALL_HINT} (or unset USE_RAY).")

    @property
    def local_cluster(self) -> bool:
        """True when `ray.init` starts a cluster on this machine (no `address`, no RAY_ADDRESS)."""
        return not (self.ray_init_kwargs or {}).get("address") and not os.environ.get("RAY_ADDRESS")


def wants_ray(settings: RayArguments) -> bool:
    """Whether `lf train` launches through Ray; a launch asked for twice (Ray and torchrun) is refused."""
    if not use_ray():
        if settings.ray_num_workers > 1:
            logger.warning("ray_num_workers=%d is read only with USE_RAY=1 (as in LlamaFactory); training in "
                           "this process. Set USE_RAY=1 to train in %d Ray workers.",
                           settings.ray_num_workers, settings.ray_num_workers)
        return False
    from lf_train.launch import launched_by_user

    if launched_by_user():
        raise ConfigError("USE_RAY=1 inside a process started by torchrun/accelerate/deepspeed (LOCAL_RANK is set): "
                          "Ray launches the workers itself. Unset USE_RAY, or start `lf train` directly.")
    torchrun = [name for name in ("NPROC_PER_NODE", "NNODES") if os.environ.get(name, "1") not in ("", "1")]
    if os.environ.get("FORCE_TORCHRUN", "").lower() in _TRUE:
        torchrun.append("FORCE_TORCHRUN")
    if torchrun:
        raise ConfigError(f"USE_RAY=1 and {', '.join(torchrun)} both ask for several processes; Ray starts "
                          f"ray_num_workers={settings.ray_num_workers} workers itself. Unset one of them.")
    return True


def run_on_ray(plan: TrainPlan, config: dict[str, Any], source: str = "") -> int:
    """Train the checked `plan` in `ray_num_workers` Ray Train workers; returns the exit status."""
    settings = plan.ray
    worker_plan = copy.deepcopy(plan)  # each worker finishes its own plan, in its own distributed environment
    if settings.local_cluster:  # same machine, same hardware: one clear error now rather than one per worker
        from lf_train.plan import finish_plan

        finish_plan(plan)
    if settings.master_addr or settings.master_port:
        logger.warning("master_addr/master_port are not used under Ray Train: it sets up the process group on "
                       "worker 0's node with a free port.")
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig, TrainingFailedError
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as err:
        raise ConfigError(f"USE_RAY=1 needs Ray Train ({err.name or err} is missing): {INSTALL_HINT}.") from None

    started = not ray.is_initialized()
    if started:
        _init_ray(ray, settings)
    try:
        use_gpu, per_worker = _worker_resources(ray, settings)
        storage_filesystem, storage_path = _storage(settings)
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"plan": worker_plan, "config": config, "source": source, "cwd": os.getcwd()},
            scaling_config=ScalingConfig(num_workers=settings.ray_num_workers, use_gpu=use_gpu,
                                         resources_per_worker=settings.resources_per_worker,
                                         placement_strategy=settings.placement_strategy),
            # Ray Train opens the process group, so it gets the recipe's ddp_timeout (LlamaFactory's recipes raise
            # it: rank 0 tokenises while the others wait)
            torch_config=TorchConfig(timeout_s=plan.hf.get("ddp_timeout", 1800)),
            run_config=RunConfig(name=settings.ray_run_name, storage_path=storage_path,
                                 storage_filesystem=storage_filesystem),
        )
        logger.info("Ray Train: %d workers (%s each, %s); its bookkeeping goes to %s, the run to %s",
                    settings.ray_num_workers, per_worker, settings.placement_strategy,
                    f"{storage_path}/{settings.ray_run_name or '<Ray run name>'}", plan.hf["output_dir"])
        try:
            trainer.fit()
        except TrainingFailedError as err:
            _reraise_worker_error(err)
            raise
    finally:
        if started:
            ray.shutdown()
    return 0


def _init_ray(ray: Any, settings: RayArguments) -> None:
    kwargs = dict(settings.ray_init_kwargs or {})
    known = set(inspect.signature(ray.init).parameters) - {"kwargs"}
    unknown = [name for name in kwargs if name not in known and not name.startswith("_")]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        raise ConfigError(f"ray_init_kwargs: {unknown[0]!r} is not an argument of ray.init"
                          + (f"; did you mean {close[0]!r}?" if close else "."))
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise ConfigError(f"ray_init_kwargs: cannot reach the Ray cluster ({err}). Check `address` and that the "
                          "cluster is running (`ray status`).") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"ray_init_kwargs: ray.init refused them: {err}") from None


def _worker_resources(ray: Any, settings: RayArguments) -> tuple[bool, dict[str, float]]:
    """(use_gpu, what each worker reserves), as Ray Train's ScalingConfig computes it; on a local
    cluster that cannot hold the workers, an error instead of a run that waits forever."""
    cluster = ray.cluster_resources()
    asked = settings.resources_per_worker
    use_gpu = asked["GPU"] > 0 if asked and "GPU" in asked else cluster.get("GPU", 0) > 0
    per_worker = {k: v for k, v in asked.items() if v} if asked else ({"GPU": 1} if use_gpu else {"CPU": 1})
    if use_gpu:
        per_worker.setdefault("GPU", 1)
    short = [f"{name} {amount * settings.ray_num_workers:g} (cluster has {cluster.get(name, 0):g})"
             for name, amount in per_worker.items() if amount * settings.ray_num_workers > cluster.get(name, 0)]
    if short:
        message = (f"ray_num_workers={settings.ray_num_workers} workers with {per_worker} each need "
                   f"{', '.join(short)}")
        if settings.local_cluster:
            raise ConfigError(f"{message}. Lower ray_num_workers or resources_per_worker, or give ray.init more "
                              "(ray_init_kwargs: {num_cpus: N}).")
        logger.warning("%s: the run waits until the cluster has them.", message)
    return use_gpu, per_worker


def _storage(settings: RayArguments) -> tuple[Any, str]:
    """(pyarrow filesystem or None, storage path) for Ray Train's RunConfig."""
    if settings.ray_storage_filesystem is None:
        return None, Path(settings.ray_storage_path).expanduser().absolute().as_posix()
    import pyarrow.fs

    if settings.ray_storage_filesystem == "s3":
        return pyarrow.fs.S3FileSystem(), settings.ray_storage_path
    return pyarrow.fs.GcsFileSystem(), settings.ray_storage_path


def _reraise_worker_error(err: Exception) -> None:
    """A worker's LF error (a message meant for the user) reaches the user as that one line."""
    failures = getattr(err, "worker_failures", None) or {}
    for rank in sorted(failures):
        if isinstance(failures[rank], LFError):
            raise failures[rank] from None


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the same `run_train` a torchrun process runs, in the user's folder."""
    cwd = loop_config["cwd"]
    if os.path.isdir(cwd):  # Ray starts workers in its session folder: relative paths mean the user's folder
        os.chdir(cwd)
    from lf_data.cli import setup_logging
    from lf_train.run import run_train

    setup_logging()
    run_train(loop_config["config"], source=loop_config["source"], plan=loop_config["plan"])
