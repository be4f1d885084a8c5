"""LF evaluation: multiple-choice benchmarks (MMLU / CMMLU / C-Eval layout), BLEU and ROUGE, batch prediction.

    from lf_eval import run_eval, compute_generation_metrics
    run_eval({"model_name_or_path": "smollm2-135m-instruct", "task": "mmlu_test", "task_dir": "evaluation"})
    compute_generation_metrics(["The cat sat."], ["A cat sat."])  # {"bleu-4": ..., "rouge-1": ..., ...}

Importing this package is light (no torch, nltk or jieba until they are used).
"""

from typing import TYPE_CHECKING, Any

from lf_eval.metrics import compute_generation_metrics

if TYPE_CHECKING:
    from lf_eval.predict import save_predictions
    from lf_eval.run import run_eval

_LAZY = {"save_predictions": "predict", "run_eval": "run"}

__version__ = "0.1.0"
__all__ = ["compute_generation_metrics", "run_eval", "save_predictions"]


def __getattr__(name: str) -> Any:
    """Prediction and benchmark runs (their configs and the serving engine) load on first use, so `lf
    --help` and the other commands do not pay for them."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lf_eval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lf_eval' has no attribute {name!r}")
