"""Gather here what bench/gpu.py needs on a lent GPU machine that its image lacks.

The device image (python3 3.12 with torch, transformers, accelerate, peft, pyarrow and friends; the
device tool's KINDS.md lists them) reaches no package registry, so LF, LlamaFactory and their missing
packages travel as wheels in one folder that the `run` tool carries (64 MiB at most, with the tree):

  .gpu_kit/lf/            LF's six packages and what they need beyond the image, at uv.lock's versions
  .gpu_kit/llamafactory/  LlamaFactory 0.9.5 with its own pins (transformers 5.6, trl 0.24, datasets 4.0...)
  .gpu_kit/tokenizer/     SmolLM2's tokenizer (the models built from a config use it)
  .gpu_kit/data/          bench/vs_llamafactory.py's alpaca rows

Here:        uv run python bench/gpu_kit.py          (about 41 MiB; --python-version 3.11 to try it locally)
There:       bash bench/gpu_device.sh [bench/gpu.py options]      with carry=[".gpu_kit"]

Each side gets its own folder on PYTHONPATH there, ahead of the image's packages, so LF runs on its
locked transformers and LlamaFactory on the versions it pins, as each would after its own install.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / ".gpu_kit"
# beyond the image, for `lf train` and lf-serve's engine in process (fastapi: lf_serve's app module);
# lf-eval's metrics (nltk, jieba: 19 MiB, rouge-score) are imported only when predictions are scored
LF_NEEDS = ["transformers", "peft", "trl", "datasets", "dill", "multiprocess", "fastapi", "starlette",
            "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "uvicorn", "galore-torch",
            "liger-kernel"]
# LlamaFactory 0.9.5 and what its trainer imports beyond the image, at the versions its own pip install
# chose in bench/vs_llamafactory.py --setup's environment (within its check_dependencies ceilings)
LLAMAFACTORY = ["llamafactory==0.9.5", "transformers==5.6.0", "tokenizers==0.22.2", "trl==0.24.0", "datasets==4.0.0",
                "fsspec==2025.3.0", "peft==0.18.1", "accelerate==1.11.0", "dill==0.3.8", "multiprocess==0.70.16",
                "omegaconf==2.4.0"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]


def locked(names: list[str]) -> list[str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"] if "version" in p}
    missing = [n for n in names if n not in versions]
    if missing:
        sys.exit(f"uv.lock has no {missing}: update LF_NEEDS in {__file__}")
    return [f"{n}=={versions[n]}" for n in names]


def wheels(requirements: list[str], folder: Path, python: str) -> None:
    """Wheels for the device's CPython and platform (every package named publishes them)."""
    tags = [arg for p in PLATFORMS for arg in ("--platform", p)]
    got = subprocess.run(["uvx", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                          python, "--implementation", "cp", *tags, "-d", str(folder), *requirements],
                         capture_output=True, text=True)  # any pip will do; uv is what the README installs
    if got.returncode != 0:
        sys.exit(f"pip download failed for {folder.name}:\n{got.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", default="3.12", help="the device's python3 (3.12 in its image)")
    args = parser.parse_args()
    building = KIT.with_name(KIT.name + ".partial")  # renamed into place once complete
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run(["uv", "build", "-q", "--all-packages", "--wheel", "-o", str(building / "lf")], check=True, cwd=REPO)
    wheels(locked(LF_NEEDS), building / "lf", args.python_version)
    wheels(LLAMAFACTORY, building / "llamafactory", args.python_version)

    sys.path.insert(0, str(REPO / "bench"))
    from vs_llamafactory import corpus, model_path, write_data

    from lf_models.args import ModelArguments
    from lf_models.loader import load_tokenizer

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=model_path("smollm2-135m-instruct", building, [])))
    tokenizer.save_pretrained(building / "tokenizer")
    (building / "data").mkdir()
    write_data(building / "data", corpus(), sft_rows=2000)
    for unused in ("bench_dpo.json", "bench_pt.json"):  # gpu.py trains sft only
        (building / "data" / unused).unlink()
    shutil.rmtree(KIT, ignore_errors=True)
    building.rename(KIT)
    size = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file()) / 2**20
    print(f"{KIT}: {size:.1f} MiB (the run tool carries 64 MiB with the working tree)")


if __name__ == "__main__":
    main()
