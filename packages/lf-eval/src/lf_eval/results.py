"""Accuracy per subject, per category and overall; the table on screen and results.json.

Category and overall accuracies pool the questions (a subject with more questions weighs more),
as MMLU, C-Eval and CMMLU report them.
"""

from __future__ import annotations

from typing import Any

from lf_eval.benchmarks import CATEGORIES, Subject

RESULTS_FILE = "results.json"


def accuracy_report(subjects: dict[str, Subject], answers: dict[str, list[str]],
                    predictions: dict[str, list[str]]) -> dict[str, Any]:
    """answers/predictions: subject -> letters. Accuracies in percent."""
    per_subject: dict[str, Any] = {}
    pooled: dict[str, list[int]] = {}
    for subject, truth in answers.items():
        correct = sum(p == a for p, a in zip(predictions[subject], truth, strict=True))
        category = subjects[subject].category
        per_subject[subject] = {"name": subjects[subject].name, "category": category,
                                "accuracy": round(100.0 * correct / len(truth), 4),
                                "correct": correct, "questions": len(truth)}
        counts = pooled.setdefault(category, [0, 0])
        counts[0] += correct
        counts[1] += len(truth)
    ordered = [c for c in CATEGORIES if c in pooled] + sorted(set(pooled) - set(CATEGORIES))
    categories = {c: {"accuracy": round(100.0 * pooled[c][0] / pooled[c][1], 4), "correct": pooled[c][0],
                      "questions": pooled[c][1]} for c in ordered}
    correct = sum(c[0] for c in pooled.values())
    total = sum(c[1] for c in pooled.values())
    return {"average": round(100.0 * correct / total, 4), "correct": correct, "questions": total,
            "categories": categories, "subjects": per_subject}


def format_table(report: dict[str, Any]) -> str:
    width = max([len(s) for s in report["subjects"]] + [len(c) for c in report["categories"]] + [7])
    lines = [f"{'subject':<{width}}  {'category':<15}  {'questions':>9}  {'accuracy':>8}"]
    for subject, row in report["subjects"].items():
        lines.append(f"{subject:<{width}}  {row['category']:<15}  {row['questions']:>9}  {row['accuracy']:>8.2f}")
    lines.append("-" * len(lines[0]))
    for category, row in report["categories"].items():
        lines.append(f"{category:<{width}}  {'':<15}  {row['questions']:>9}  {row['accuracy']:>8.2f}")
    lines.append(f"{'Average':<{width}}  {'':<15}  {report['questions']:>9}  {report['average']:>8.2f}")
    return "\n".join(lines)
