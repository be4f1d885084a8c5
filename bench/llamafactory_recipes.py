"""Do LlamaFactory's own example recipes pass LF's config check unchanged?

Run: uv run python bench/llamafactory_recipes.py PATH/TO/LLaMA-Factory/examples [--run]

Each YAML recipe of LlamaFactory's `examples/` folder (train_lora, train_full, train_qlora, extras,
inference, merge_lora, ...) goes to the LF command a user would give it to (`lf train`, `lf chat`
for inference/, `lf export` for merge_lora/) with `--check`, changing only what a migrating user
changes: the model path (a tiny local Llama built here; hub ids cannot be downloaded on this
machine), the adapter path, the dataset folder (every dataset name the recipes use, written here in
the format LlamaFactory's dataset_info.json gives it), and the output folders. Every other key and
value is the recipe's own. The table says, per recipe: ok, refused (a one-line reason: hardware or a
package this machine lacks, or multimodal training, which is its own issue) or FAIL (anything else,
above all an unknown key). Files that are not LF-style recipes (accelerate and DeepSpeed configs,
LlamaFactory's experimental v1 schema) are listed as skipped.

With --run, the recipes that pass the check and train on a CPU also train for 2 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LF = str(Path(sys.executable).parent / "lf")
SKIPPED_FOLDERS = {"accelerate": "accelerate launch config", "deepspeed": "DeepSpeed config",
                   "v1": "LlamaFactory's experimental v1 schema (another config format)"}
NOT_RECIPES = {"tokens_cfg.yaml": "new_special_tokens_config data file"}
# What a refusal that is not LF's fault says; anything else that stops a recipe counts as a failure.
REFUSAL_WORDS = ("GPU", "CUDA", "NPU", "needs the", "pip install", "not installed", "multimodal",
                 "does not feed media", "placeholder text", "hardware", "Megatron", "KTransformers")
ACCELERATE_KEYS = {"compute_environment", "distributed_type"}  # an accelerate config, wherever it lies
BF16_ON_CPU = "bf16: true needs a GPU"

ALPACA = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(8)]
SHAREGPT_MEDIA = [{"messages": [{"role": "user", "content": "<image>What is this?"},
                                {"role": "assistant", "content": "A square."}], "images": ["square.png"]}]
PAIRWISE = [{"conversations": [{"from": "human", "value": f"Say {i}."}],
             "chosen": {"from": "gpt", "value": f"{i}."}, "rejected": {"from": "gpt", "value": "No."}}
            for i in range(8)]
KTO = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}."}],
        "label": i % 2 == 0} for i in range(8)]
TEXT = [{"text": f"Plain text number {i} for language modelling."} for i in range(8)]
DATASETS = {  # name: (rows, dataset_info.json entry without file_name)
    "identity": (ALPACA, {}),
    "alpaca_en_demo": (ALPACA, {}),
    "alpaca_zh_demo": (ALPACA, {}),
    "alpaca_zh": (ALPACA, {}),
    "math": (ALPACA, {}),
    "med": (ALPACA, {}),
    "c4_demo": (TEXT, {"columns": {"prompt": "text"}}),
    "dpo_en_demo": (PAIRWISE, {"ranking": True, "formatting": "sharegpt",
                               "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}),
    "rlhf_v": (PAIRWISE, {"ranking": True, "formatting": "sharegpt",
                          "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}),
    "kto_en_demo": (KTO, {"formatting": "sharegpt", "columns": {"messages": "messages", "kto_tag": "label"},
                          "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                   "assistant_tag": "assistant"}}),
}
for _media in ("mllm_demo", "mllm_video_demo", "llava_1k_en", "llava_1k_zh"):
    DATASETS[_media] = (SHAREGPT_MEDIA, {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
                                         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                                  "assistant_tag": "assistant"}})


def build_workspace(root: Path) -> dict[str, str]:
    """A tiny Llama, a LoRA adapter on it, and a dataset folder holding every name the recipes use."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model, build_tokenizer
    from model_helpers import save_lora_adapter
    from PIL import Image

    tokenizer = build_tokenizer(root / "tokenizer")
    model_dir = build_tiny_model(root / "model", "llama", tokenizer)
    adapter_dir = save_lora_adapter(model_dir, root / "adapter")
    data = root / "data"
    data.mkdir()
    Image.new("RGB", (32, 32), "red").save(data / "square.png")
    info = {}
    for name, (rows, entry) in DATASETS.items():
        (data / f"{name}.json").write_text(json.dumps(rows))
        info[name] = {"file_name": f"{name}.json", **entry}
    (data / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return {"model": str(model_dir), "adapter": str(adapter_dir), "data": str(data)}


def command_for(path: Path) -> str:
    parts = path.parts
    if "merge_lora" in parts:
        return "export"
    if "inference" in parts:
        return "chat"
    return "train"


def localise(recipe: dict, path: Path, examples: Path, work: dict[str, str], out: Path) -> dict:
    """Only what a migrating user changes: model/adapter/data/output paths; every other key stays."""
    recipe = dict(recipe)
    for key in ("model_name_or_path", "ref_model", "reward_model"):
        if key in recipe and recipe[key]:
            recipe[key] = work["model"]
    if recipe.get("adapter_name_or_path"):
        recipe["adapter_name_or_path"] = work["adapter"]
    if "dataset" in recipe or "eval_dataset" in recipe:
        recipe["dataset_dir"] = work["data"]
    for key in ("output_dir", "export_dir", "tokenized_path", "save_dir"):
        if key in recipe:
            recipe[key] = str(out / key)
    for key in ("deepspeed", "new_special_tokens_config"):
        value = recipe.get(key)
        if isinstance(value, str) and value.startswith("examples/"):
            ours = REPO / value
            recipe[key] = str(ours if ours.exists() else examples.parent / value)
    return recipe


def check(recipe_path: Path, command: str, run: bool) -> tuple[str, str]:
    argv = [LF, command, str(recipe_path)] + ([] if run else ["--check"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LF_VERBOSITY": "quiet"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode == 0:
        return "ok", ""
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith("error:")), max(len(lines) - 1, 0))
    message = " ".join(line.strip() for line in lines[first:first + 4]).removeprefix("error: ") if lines else ""
    verdict = "refused" if any(word in message for word in REFUSAL_WORDS) and "unknown" not in message else "FAIL"
    return verdict, message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", type=Path, help="LlamaFactory's examples/ folder")
    parser.add_argument("--run", action="store_true", help="train 2 steps where the check passes")
    args = parser.parse_args()
    examples = args.examples.resolve()
    rows, counts = [], {"ok": 0, "ok without bf16": 0, "refused": 0, "FAIL": 0, "skipped": 0}
    with tempfile.TemporaryDirectory(prefix="lf-recipes-") as tmp:
        work = build_workspace(Path(tmp))
        for path in sorted(examples.rglob("*.yaml")):
            rel = path.relative_to(examples)
            skip = SKIPPED_FOLDERS.get(rel.parts[0]) or NOT_RECIPES.get(path.name)
            if skip:
                rows.append((str(rel), "-", "skipped", skip))
                counts["skipped"] += 1
                continue
            raw = yaml.safe_load(path.read_text())
            if set(raw) >= ACCELERATE_KEYS:
                rows.append((str(rel), "-", "skipped", "accelerate launch config"))
                counts["skipped"] += 1
                continue
            command = command_for(rel)
            out = Path(tmp) / "runs" / str(rel.with_suffix("")).replace("/", "_")
            recipe = localise(raw, rel, examples, work, out)
            if args.run and command == "train":
                recipe.update(max_steps=2, save_steps=2, logging_steps=1)
            recipe_path = out.with_suffix(".yaml")
            recipe_path.parent.mkdir(parents=True, exist_ok=True)
            recipe_path.write_text(yaml.safe_dump(recipe))
            verdict, message = check(recipe_path, command, args.run and command == "train")
            if BF16_ON_CPU in message:  # the one edit a user on a CPU makes; say what happens next
                recipe_path.write_text(yaml.safe_dump({k: v for k, v in recipe.items() if k != "bf16"}))
                verdict, after = check(recipe_path, command, args.run and command == "train")
                message = f"bf16 needs a GPU; without bf16: {verdict}" + (f": {after}" if after else "")
                verdict = "ok without bf16" if verdict == "ok" else verdict
            counts[verdict] += 1
            rows.append((str(rel), f"lf {command}", verdict, message[:300]))
    print("| recipe | command | result | message |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    print("\n" + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
