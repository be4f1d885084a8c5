"""`lf eval`: check the whole configuration and read every question before any model loads.

Two kinds of task share the command: a multiple-choice benchmark (`task: mmlu_test`, scored by
next-token logits) and `task: predict` (generate an answer for every row of `dataset` through an
lf-serve engine, then BLEU/ROUGE against the dataset's answers).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lf_data.config import parse_sections, section_keys
from lf_data.errors import ConfigError
from lf_data.llamafactory_keys import translate_for
from lf_eval.args import PREDICT_TASK, EvalArguments
from lf_eval.results import RESULTS_FILE

logger = logging.getLogger(__name__)


def serve_sections() -> tuple[type, ...]:
    from lf_data.args import DataArguments
    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_serve.args import GeneratingArguments, InferArguments

    return DataArguments, ModelArguments, FinetuningArguments, GeneratingArguments, InferArguments


def parse_eval_config(config: dict[str, Any], source: str = "") -> tuple[EvalArguments, Any]:
    """(evaluation keys, lf-serve's plan of the model keys); for `task: predict` the plan decodes
    greedily unless the config asks for sampling, and batches `batch_size` prompts."""
    from lf_serve.args import parse_serve_config

    eval_keys = set(section_keys(EvalArguments))
    serve_keys = {key for section in serve_sections() for key in section_keys(section)}
    config = translate_for("eval", config, EvalArguments, passthrough=serve_keys, source=source)
    (args,) = parse_sections(config, EvalArguments, source=source, passthrough=serve_keys)
    serve_config = {k: v for k, v in config.items() if k not in eval_keys}
    if args.task == PREDICT_TASK:
        if "do_sample" not in serve_config and "temperature" not in serve_config:
            serve_config["do_sample"] = False  # scores should not depend on luck
        serve_config.setdefault("max_batch_size", args.batch_size)
    return args, parse_serve_config(serve_config, source)


def check_save_dir(save_dir: str | None, files: list[str], overwrite: bool) -> None:
    if save_dir is None:
        return
    path = Path(save_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"save_dir {save_dir!r} is a file; choose a folder path.")
    existing = [name for name in files if (path / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"save_dir {save_dir!r} already holds {existing[0]}. Choose another save_dir, or set "
                          "overwrite_save_dir=true to replace it.")


def run_eval(config: dict[str, Any], source: str = "") -> dict[str, Any]:
    """Run the configured task; returns what was written (results.json's or predict_results.json's content)."""
    args, plan = parse_eval_config(config, source)
    if args.task == PREDICT_TASK:
        from lf_eval.predict import run_predict

        return run_predict(args, plan)
    return run_choice_eval(args, plan)


def check_eval(config: dict[str, Any], source: str = "") -> tuple[list[str], dict[str, Any]]:
    """`lf eval --check`: the config, every question (or dataset row) and save_dir checked; what would run."""
    args, plan = parse_eval_config(config, source)
    model = plan.model.model_name_or_path + (f" + {', '.join(plan.model.adapter_name_or_path)}"
                                             if plan.model.adapter_name_or_path else "")
    if args.task == PREDICT_TASK:
        from lf_eval.predict import PREDICT_RESULTS_FILE, PREDICTIONS_FILE, dataset_conversations

        check_save_dir(args.save_dir, [PREDICTIONS_FILE, PREDICT_RESULTS_FILE], args.overwrite_save_dir)
        rows = len(dataset_conversations(plan)[0])
        what = [f"generate answers for {rows} rows of {', '.join(plan.data.dataset or [])} with {model}, "
                f"score BLEU-4 and ROUGE into {args.save_dir}"]
    else:
        from lf_eval.questions import load_task

        task = load_task(args)
        check_save_dir(args.save_dir, [RESULTS_FILE], args.overwrite_save_dir)
        total = sum(len(q) for q in task.questions.values())
        what = [f"task {task.name} ({task.split} split, {task.source}): {len(task.subjects)} subjects, {total} "
                f"questions, {args.n_shot}-shot, prompts in {task.lang}", f"model {model}"]
    import dataclasses

    sections = (args, plan.data, plan.model, plan.generating, plan.infer)
    return what, {key: value for section in sections for key, value in dataclasses.asdict(section).items()}


def run_choice_eval(args: EvalArguments, plan: Any) -> dict[str, Any]:
    from lf_data.atomic_files import write_json_atomic
    from lf_eval.choice_scoring import choice_token_ids, score_choices
    from lf_eval.prompts import encode_question
    from lf_eval.questions import CHOICES, load_task
    from lf_eval.results import accuracy_report, format_table

    task = load_task(args)
    check_save_dir(args.save_dir, [RESULTS_FILE], args.overwrite_save_dir)
    total = sum(len(q) for q in task.questions.values())
    logger.info("task %s (%s split, %s): %d subjects, %d questions, %d-shot, prompts in %s", task.name, task.split,
                task.source, len(task.subjects), total, args.n_shot, task.lang)

    from lf_serve.model_setup import setup_model

    setup = setup_model(plan)
    tokenizer, template = setup.tokenizer, setup.template
    choice_ids = choice_token_ids(tokenizer, CHOICES)
    prompts: list[list[int]] = []
    owners: list[str] = []
    trimmed = 0
    for subject, questions in task.questions.items():
        shots = task.shots.get(subject, [])
        for question in questions:
            ids, kept = encode_question(template, tokenizer, question, shots, task.subjects[subject].name, task.lang,
                                        plan.data.cutoff_len)
            trimmed += kept < len(shots)
            prompts.append(ids)
            owners.append(subject)
    if trimmed:
        logger.warning("%d prompt(s) were longer than cutoff_len=%d: their last few-shot examples were dropped",
                       trimmed, plan.data.cutoff_len)

    model = load_inference_model(plan, setup)
    started = time.perf_counter()
    scores = score_choices(model, prompts, choice_ids, tokenizer.pad_token_id, args.batch_size,
                           progress=_progress(len(prompts)))
    elapsed = time.perf_counter() - started
    predictions: dict[str, list[str]] = {s: [] for s in task.questions}
    for subject, row in zip(owners, scores, strict=True):
        predictions[subject].append(CHOICES[max(range(len(row)), key=row.__getitem__)])
    answers = {s: [q.answer or "" for q in qs] for s, qs in task.questions.items()}
    report = accuracy_report(task.subjects, answers, predictions)
    results = {
        "task": args.task, "source": task.source, "model_name_or_path": plan.model.model_name_or_path,
        "adapter_name_or_path": plan.model.adapter_name_or_path, "template": template.name,
        "n_shot": args.n_shot, "lang": task.lang, **report, "predictions": predictions,
        "runtime_s": round(elapsed, 3),
    }
    print(format_table(report))
    if args.save_dir:
        path = write_json_atomic(Path(args.save_dir) / RESULTS_FILE, results)
        print(f"\nresults written to {path}")
    return results


def load_inference_model(plan: Any, setup: Any) -> Any:
    import torch

    from lf_models.loader import load_model
    from lf_serve.engines.huggingface import inference_precision

    model = load_model(plan.model, plan.finetuning, inference_precision(plan.infer.infer_dtype), is_trainable=False,
                       source=setup.source, tokenizer=setup.tokenizer)
    if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model = model.to("cuda")
    return model.eval()


def _progress(total: int) -> Any:
    state = {"done": 0, "next": 0.1}

    def step(n: int) -> None:
        state["done"] += n
        if state["done"] / total >= state["next"] or state["done"] == total:
            logger.info("scored %d/%d questions", state["done"], total)
            while state["next"] <= state["done"] / total:
                state["next"] += 0.1

    return step
