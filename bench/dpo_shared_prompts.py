"""dpo with each pair's prompt computed once (LF's default with `lf_sdpa`) against the same runs with the
chosen and rejected rows as separate examples of the padding-free row (the sharing switched off here
by patching `lf_train.stages.dpo.branches_allowed`; users have no key for it: it is exact).

Run: uv run python bench/dpo_shared_prompts.py [--model tiny|PATH] [--reps 2] [--prompt-words 0,100-300]

The rows and the config are bench/vs_llamafactory.py's dpo_lora (LoRA rank 8 on all linear layers, 20
steps of 2 pairs on the tiny Llama, one epoch, cutoff 512); `--prompt-words 100-300` gives each pair an
input passage of that many words (real preference data has prompts of that size; the bench's own rows
are short questions). Both arms alternate `--reps` times in fresh `lf train`
processes; real tokens/s (both rows of each pair, as vs_llamafactory.py counts them), peak RSS, mean loss.

2026-12-06, 2 cores (AMD EPYC), tiny Llama, medians of 2 (shared: the share of the pairs' tokens left out):
prompt words    shared  tokens/s off      on  ratio  RSS off     on   loss off        on
bench             7.3%         1,693   1,797  1.06x    1,271  1,275   0.724315  0.724315
100-300          31.4%         1,705   2,285  1.34x    1,407  1,332   0.704982  0.704981
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_llamafactory as shared  # noqa: E402

RUNNER = """
import sys
import lf_train.stages.dpo as dpo
if sys.argv[2] == "off":
    dpo.branches_allowed = lambda model: False
from lf_data.cli import main
sys.exit(main(["train", sys.argv[1]]))
"""


def longer_prompts(data: Path, texts: list[str], low: int, high: int) -> None:
    rng = random.Random(1)
    words = [t.split() for t in texts]
    rows = json.loads((data / "bench_dpo.json").read_text())
    for row in rows:
        row["input"] = shared.passage(rng.choice(words), rng, low, high)
    (data / "bench_dpo.json").write_text(json.dumps(rows))


def shared_share(config: dict) -> float:
    """The share of the pairs' tokens that the sharing leaves out (the common prefix less one token)."""
    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.args import ModelArguments
    from lf_models.loader import load_tokenizer

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=config["model_name_or_path"]))
    args = DataArguments(dataset=[config["dataset"]], dataset_dir=config["dataset_dir"], template="chatml",
                         cutoff_len=config["cutoff_len"], max_samples=config["max_samples"])
    rows = build_dataset(args, tokenizer, "dpo").train_dataset
    total = saved = 0
    for chosen, rejected in zip(rows["chosen_input_ids"], rows["rejected_input_ids"], strict=True):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        total, saved = total + len(chosen) + len(rejected), saved + max(n - 1, 0)
    return saved / total


def main() -> None:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--prompt-words", default="0,100-300", help="0: the bench's rows; LOW-HIGH: input passages")
    ns = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lf-dpo-shared-") as tmp:
        root = Path(tmp)
        texts = shared.corpus()
        model = shared.tiny_model(root, texts) if ns.model == "tiny" else ns.model
        for words in ns.prompt_words.split(","):
            data = root / f"data-{words}"
            data.mkdir()
            shared.write_data(data, texts)
            if words != "0":
                low, high = map(int, words.split("-"))
                longer_prompts(data, texts, low, high)
            results: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
            config = shared.train_config("dpo_lora", model, data, root / "out", ns.model == "tiny")
            tokens, share = shared.real_tokens(config), shared_share(config)
            for _ in range(ns.reps):
                for arm in results:
                    out = root / f"out-{arm}"
                    path = root / f"{arm}.yaml"
                    path.write_text(yaml.safe_dump({**config, "output_dir": str(out)}))
                    log = root / f"{arm}.log"
                    code, rss, _ = shared.measured([sys.executable, "-c", RUNNER, str(path), arm], {}, log)
                    if code != 0:
                        raise RuntimeError(f"{arm} failed:\n{log.read_text()[-3000:]}")
                    result = json.loads((out / "train_results.json").read_text())
                    results[arm].append((tokens / result["train_runtime"], rss, result["train_loss"]))
            med = {arm: [statistics.median(r[i] for r in runs) for i in range(3)] for arm, runs in results.items()}
            rows.append((words, share, med))
    print(f"{'prompt words':<14}{'shared':>8}{'tokens/s off':>14}{'on':>8}{'ratio':>7}{'RSS off':>9}{'on':>7}"
          f"{'loss off':>11}{'on':>10}")
    for words, share, med in rows:
        off, on = med["off"], med["on"]
        print(f"{'bench' if words == '0' else words:<14}{share:>8.1%}{off[0]:>14,.0f}{on[0]:>8,.0f}{on[0] / off[0]:>6.2f}x"
              f"{off[1]:>9,.0f}{on[1]:>7,.0f}{off[2]:>11.6f}{on[2]:>10.6f}")


if __name__ == "__main__":
    main()
