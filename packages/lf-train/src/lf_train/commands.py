"""`lf train` and `lf estimate`: a light module (torch is imported only when a command runs)."""

from __future__ import annotations

import logging
import os
from typing import Any

from lf_data.cli import Command, check_only, print_check, read_command_config, setup_logging

logger = logging.getLogger(__name__)


def _run_train(argv: list[str]) -> int:
    config, source = read_command_config(
        "lf train", "Fine-tune a model from one flat YAML config; key=value arguments override its keys.",
        "Keys: see packages/lf-train/README.md. Example: lf train examples/quickstart.yaml learning_rate=1e-4. "
        "Several processes: NPROC_PER_NODE=2 lf train x.yaml (and NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT); "
        "through Ray Train: USE_RAY=1 lf train x.yaml ray_num_workers=4.",
        argv)
    from lf_train.plan import check_train_config, finish_plan

    plan = check_train_config(config, source)  # a typo or a bad value answers before torch is imported
    setup_logging()
    if check_only(argv):
        from lf_train.plan import describe_plan, resolved_config

        plan = finish_plan(plan)
        return print_check("lf train", source, describe_plan(plan), resolved_config(plan))
    _keep_bitsandbytes_out(plan)
    _announce_estimate(plan)
    from lf_train.launch import run_torchrun, torchrun_command
    from lf_train.ray_launch import run_on_ray, wants_ray

    if wants_ray(plan.ray):
        return run_on_ray(plan, config, source)
    command = torchrun_command(argv)
    if command is not None:
        finish_plan(plan)  # one clear error now rather than one per process
        return run_torchrun(command)
    from lf_train.launch import close_process_group
    from lf_train.run import run_train

    try:
        run_train(config, source=source, plan=plan)
    except BaseException:
        close_process_group(wait=False)
        raise
    close_process_group(wait=True)
    return 0


train = Command(help="fine-tune a model from a YAML config (lf train CONFIG [key=value ...] [--check])",
                run=_run_train)


def _keep_bitsandbytes_out(plan: Any) -> bool:
    """In a fresh `lf train` process, mark bitsandbytes as absent when the run never uses it: peft
    imports it with the package whenever it is installed (a tiny LoRA run: peak RSS 967 -> 919 MiB and
    up to 3 s less on 2 cores). Not in a process that already imported torch (a library caller, the tests),
    whose later runs may quantise: peft and transformers remember what they found."""
    import importlib.util
    import sys

    if "torch" in sys.modules or "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return False
    from lf_models.quantization import may_use_bitsandbytes

    train = plan.train
    if may_use_bitsandbytes(plan.model, plan.hf.get("optim"),
                            other_models=bool(train.ref_model or train.reward_model or train.ref_model_quantization_bit)):
        return False
    sys.modules["bitsandbytes"] = None  # `import bitsandbytes` fails and find_spec answers None
    logger.debug("bitsandbytes: not loaded (this run quantises nothing and uses no bitsandbytes optimizer)")
    return True


def _announce_estimate(plan: Any) -> None:
    """The estimate's one line at the start of a run and, before anything loads, a warning when it
    exceeds the device's memory, naming the keys that would make it fit. Printed once (not again by
    the processes torchrun starts); an estimate that cannot be made never stops the run."""
    if os.environ.get("LOCAL_RANK") is not None:
        return
    try:
        from lf_train.estimate import GIB, estimate_plan, find_device, read_model_config, suggest

        device = find_device(None)
        model_config = read_model_config(plan.model)
        result = estimate_plan(plan, device, model_config=model_config)
    except Exception as err:  # noqa: BLE001 - a hub model not at hand, an unusual architecture
        logger.debug("no memory estimate: %s", err)
        return
    logger.info("%s", result.summary())
    if not result.fits:
        fixes = suggest(plan, result, model_config)
        logger.warning("estimated peak memory %.2f GiB exceeds the %.1f GiB of %s; %s (lf estimate shows the "
                       "breakdown)", result.peak / GIB, device.memory_gib, device.name,
                       "it would fit with " + "; or ".join(fixes) if fixes else
                       "none of gradient_checkpointing, a smaller batch, quantization_bit, ZeRO-3 or offload "
                       "alone makes it fit")


def _run_estimate(argv: list[str]) -> int:
    import argparse

    from lf_data.config import read_config

    parser = argparse.ArgumentParser(
        prog="lf estimate",
        description="Peak memory per device and time of a training run, from the config `lf train` reads; "
                    "no weights are loaded (config.json or the GGUF header is enough).",
        epilog="Example: lf estimate examples/quickstart.yaml --device 'A100 40GB' finetuning_type=full. "
               "Devices: cpu (this machine's processor, its matmul speed measured once), H100 80GB, H200, "
               "A100 80GB, A100 40GB, A10G, L4, RTX 4090, RTX 3090, V100, T4 (default: this machine's).")
    parser.add_argument("config", nargs="?", help="YAML config file (the one lf train reads)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--device", help="a device by name (default: this machine's GPU, else its CPU)")
    parser.add_argument("--gpus", type=int, help="devices the run uses (default: NPROC_PER_NODE x NNODES, or 1)")
    if not argv:
        parser.print_usage()
        parser.exit(2, "lf estimate: give a YAML config file and/or key=value arguments (see lf estimate --help).\n")
    ns = parser.parse_intermixed_args(argv)
    config_path, overrides = ns.config, list(ns.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        config_path, overrides = None, [config_path, *overrides]
    config = read_config(config_path, overrides)
    setup_logging()
    from lf_train.estimate import estimate

    result = estimate(config, device=ns.device, gpus=ns.gpus, source=config_path or "the command line")
    print(result.table())
    return 0


estimate = Command(help="peak memory and time of a training run before it starts (lf estimate CONFIG [key=value ...] "
                        "[--device NAME] [--gpus N])", run=_run_estimate)
