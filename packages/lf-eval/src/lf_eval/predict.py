"""Batch prediction: an answer for every row of a dataset, written next to its label and scored.

`lf eval task=predict` generates through an lf-serve engine (transformers or vLLM, batched);
`save_predictions` is the writer and scorer that `lf train ... do_predict: true` calls as well, so
both leave the same two files in their folder:
- generated_predictions.jsonl: one {"prompt", "predict", "label"} object per row, in dataset order;
- predict_results.json: BLEU-4 and ROUGE-1/2/L (`predict_bleu-4`, ...) over all rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.atomic_files import write_json_atomic, write_jsonl_atomic
from lf_data.errors import ConfigError, DataError
from lf_eval.args import EvalArguments
from lf_eval.metrics import compute_generation_metrics

if TYPE_CHECKING:
    from lf_serve.args import ServePlan

logger = logging.getLogger(__name__)
PREDICTIONS_FILE = "generated_predictions.jsonl"
PREDICT_RESULTS_FILE = "predict_results.json"
CHUNK = 256  # conversations handed to vLLM at once (it schedules them itself)


def save_predictions(save_dir: str | Path, prompts: Sequence[str], predictions: Sequence[str],
                     labels: Sequence[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write generated_predictions.jsonl and predict_results.json (atomically); return the results."""
    if not len(prompts) == len(predictions) == len(labels):
        raise ValueError(f"{len(prompts)} prompts, {len(predictions)} predictions and {len(labels)} labels must pair up.")
    save_dir = Path(save_dir)
    write_jsonl_atomic(save_dir / PREDICTIONS_FILE, ({"prompt": p, "predict": y, "label": t}
                                                     for p, y, t in zip(prompts, predictions, labels, strict=True)))
    metrics = compute_generation_metrics(predictions, labels)
    results = {**{f"predict_{name}": value for name, value in metrics.items()}, "predict_samples": len(predictions),
               **(extra or {})}
    write_json_atomic(save_dir / PREDICT_RESULTS_FILE, results)
    return results


def dataset_conversations(plan: Any) -> tuple[list[list[dict[str, str]]], list[str]]:
    """(conversations to answer, reference answers) for every row of the configured datasets."""
    from lf_data.loading import load_aligned

    data = plan.data
    aligned = load_aligned(data.dataset, data.dataset_dir, max_samples=data.max_samples,
                           num_proc=data.preprocessing_num_workers, seed=data.seed, media_dir=data.media_dir,
                           skip_invalid=data.skip_invalid, mix_strategy=data.mix_strategy,
                           interleave_probs=data.interleave_probs)
    if aligned.invalid and not data.skip_invalid:
        listed = "\n  ".join(aligned.errors)
        raise DataError(f"{aligned.invalid} invalid row(s) in {', '.join(data.dataset)}:\n  {listed}\n"
                        "Fix them, or set skip_invalid: true to drop them.")
    conversations, labels = [], []
    for row in aligned.dataset:
        system = [{"role": "system", "content": row["_system"]}] if row["_system"] else []
        conversations.append(system + list(row["_prompt"]))
        labels.append(row["_response"][0]["content"] if row["_response"] else "")
    if not conversations:
        raise DataError(f"{', '.join(data.dataset)} holds no rows to predict.")
    return conversations, labels


def chunk_size(plan: ServePlan) -> int:
    """Rows handed to the engine at once: one batch for transformers, so the progress bar moves after
    every `generate` call; CHUNK for vLLM."""
    return plan.infer.max_batch_size if plan.infer.infer_backend == "huggingface" else CHUNK


def generate_answers(engine: Any, conversations: Sequence[list[dict[str, str]]], chunk: int) -> list[str]:
    """One answer per conversation, in order, with a progress bar over the rows (none when quiet)."""
    from tqdm import tqdm

    from lf_data.cli import show_progress

    predictions: list[str] = []
    with tqdm(total=len(conversations), desc="predict", unit="row", disable=not show_progress()) as bar:
        for start in range(0, len(conversations), chunk):
            responses = engine.batch_chat(list(conversations[start:start + chunk]))
            predictions += [r.text for r in responses]
            bar.update(len(responses))
    return predictions


def run_predict(args: EvalArguments, plan: ServePlan) -> dict[str, Any]:
    """Answer every row of the plan's datasets with its model and score the answers against the labels."""
    from lf_eval.run import check_save_dir
    from lf_serve import load_engine

    if not plan.data.dataset:
        raise ConfigError("task: predict needs `dataset`: names from dataset_info.json in dataset_dir.")
    assert args.save_dir is not None  # EvalArguments requires it for predict
    check_save_dir(args.save_dir, [PREDICTIONS_FILE, PREDICT_RESULTS_FILE], args.overwrite_save_dir)
    conversations, labels = dataset_conversations(plan)
    logger.info("predict: %d rows of %s", len(conversations), ", ".join(plan.data.dataset))

    engine = load_engine(plan)
    try:
        prompt_ids = [engine.encode_chat(c) for c in conversations]
        too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) > plan.data.cutoff_len]
        if too_long:
            raise DataError(f"{len(too_long)} prompt(s) are longer than cutoff_len={plan.data.cutoff_len} tokens "
                            f"(the first is row {too_long[0] + 1}, {len(prompt_ids[too_long[0]])} tokens); raise "
                            "cutoff_len or shorten the rows.")
        started = time.perf_counter()
        predictions = generate_answers(engine, conversations, chunk_size(plan))
        elapsed = time.perf_counter() - started
        prompts = [engine.tokenizer.decode(ids, skip_special_tokens=False) for ids in prompt_ids]
    finally:
        engine.close()
    results = save_predictions(args.save_dir, prompts, predictions, labels,
                               {"predict_runtime": round(elapsed, 3),
                                "predict_samples_per_second": round(len(predictions) / max(elapsed, 1e-9), 3)})
    print("\n".join(f"{name:<28} {value}" for name, value in results.items()))
    print(f"\npredictions written to {Path(args.save_dir) / PREDICTIONS_FILE}")
    return results
