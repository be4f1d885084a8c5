"""`lf train`: a light module (torch is imported only when the command runs)."""

from __future__ import annotations

from lf_data.cli import Command, check_only, print_check, read_command_config, setup_logging


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
    from lf_train.launch import run_torchrun, torchrun_command
    from lf_train.ray_launch import run_on_ray, wants_ray

    if wants_ray(plan.ray):
        return run_on_ray(plan, config, source)
    command = torchrun_command(argv)
    if command is not None:
        finish_plan(plan)  # one clear error now rather than one per process
        return run_torchrun(command)
    from lf_train.run import run_train

    run_train(config, source=source, plan=plan)
    return 0


train = Command(help="fine-tune a model from a YAML config (lf train CONFIG [key=value ...] [--check])",
                run=_run_train)
