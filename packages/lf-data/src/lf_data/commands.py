"""`lf version` and `lf env`: what is installed, without importing torch for `version`."""

from __future__ import annotations

import argparse
import platform
from importlib.metadata import PackageNotFoundError, version

from lf_data.cli import Command

LF_PACKAGES = ("lf-data", "lf-models", "lf-train", "lf-serve", "lf-eval", "lf-board")
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers",
             "safetensors", "gguf", "bitsandbytes", "deepspeed", "vllm", "gradio")


def _installed(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _run_version(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="lf version", description="Print the installed LF packages.").parse_args(argv)
    for dist in LF_PACKAGES:
        print(f"{dist:<10} {_installed(dist) or 'not installed'}")
    return 0


def environment_report() -> dict[str, str]:
    """Versions and accelerator facts that a bug report needs."""
    report = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in LF_PACKAGES + LIBRARIES:
        report[dist] = _installed(dist) or "not installed"
    if _installed("torch"):
        import torch

        if torch.cuda.is_available():
            report["device"] = f"cuda x{torch.cuda.device_count()} ({torch.cuda.get_device_name(0)})"
            report["bf16"] = str(torch.cuda.is_bf16_supported())
            report["fp16"] = "True"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            report["device"] = "mps"
            report["bf16"] = "True"
            report["fp16"] = "True"
        else:
            report["device"] = f"cpu ({torch.get_num_threads()} threads)"
            report["bf16"] = "False (training runs in fp32 on CPU)"
            report["fp16"] = "False"
    return report


def _run_env(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="lf env", description="Print versions and device support.").parse_args(argv)
    for key, value in environment_report().items():
        print(f"{key:<14} {value}")
    return 0


version_command = Command(help="print the installed LF packages", run=_run_version)
env = Command(help="print library versions, device and dtype support", run=_run_env)
