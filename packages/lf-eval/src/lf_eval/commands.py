"""`lf eval`: a light module (torch is imported only when the command runs)."""

from __future__ import annotations

from lf_data.cli import Command, check_only, print_check, read_command_config, setup_logging


def _run_eval(argv: list[str]) -> int:
    config, source = read_command_config(
        "lf eval",
        "Score a model on a multiple-choice benchmark (task: mmlu_test, ceval_val, cmmlu_test or a local task "
        "folder in the same layout), or generate answers for a dataset and score them with BLEU/ROUGE "
        "(task: predict).",
        "Keys: see packages/lf-eval/README.md. Examples: lf eval examples/eval/mmlu.yaml n_shot=0; "
        "lf eval examples/eval/predict.yaml adapter_name_or_path=saves/quickstart", argv)
    from lf_eval.run import parse_eval_config

    parse_eval_config(config, source)  # keys and values answer before torch is imported
    setup_logging()
    if check_only(argv):
        from lf_eval.run import check_eval

        return print_check("lf eval", source, *check_eval(config, source))
    from lf_eval.run import run_eval

    run_eval(config, source=source)
    return 0


eval_command = Command(help="evaluate a model: MMLU/C-Eval/CMMLU-style benchmarks or BLEU/ROUGE of generated "
                            "answers (lf eval CONFIG [key=value ...] [--check])", run=_run_eval)
