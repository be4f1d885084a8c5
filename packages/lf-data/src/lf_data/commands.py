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


env = Command(help="print library versions, device and dtype support", run=_run_env)


def _run_data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lf data", description="Check datasets and render templates.")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate every row of the configured datasets and report")
    check.add_argument("config", help="the training YAML (dataset, template, cutoff_len, model_name_or_path, stage)")
    check.add_argument("overrides", nargs="*", help="key=value overrides")
    render = sub.add_parser("render", help="print the token ids, trained mask and text of one conversation")
    render.add_argument("--template", default="auto", help="template name, or auto for the tokenizer's own")
    render.add_argument("--tokenizer", required=True, help="tokenizer folder, hub id or bundled model name")
    render.add_argument("--messages", required=True, help="JSON file: a list of {role, content} messages")
    render.add_argument("--tools", help="JSON file: a list of tool definitions")
    render.add_argument("--system", help="system prompt (overrides a system message)")
    render.add_argument("--add-generation-prompt", action="store_true", help="render a prompt for inference")
    ns = parser.parse_args(argv)
    if ns.action == "check":
        from lf_data.check import format_check, run_check
        from lf_data.config import read_config

        config = read_config(ns.config, ns.overrides)
        result = run_check(config)
        print(format_check(result))
        return 1 if result.report.invalid and not config.get("skip_invalid") else 0

    import json
    from pathlib import Path

    from lf_data.errors import DataError
    from lf_data.render import load_tokenizer, render_conversation

    def read_json(path: str, what: str):
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{what} file {path!r} does not exist") from None
        except json.JSONDecodeError as err:
            raise DataError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}") from None

    messages = read_json(ns.messages, "--messages")
    if not isinstance(messages, list):
        raise DataError(f"{ns.messages} must hold a JSON list of messages")
    tools = read_json(ns.tools, "--tools") if ns.tools else None
    tokenizer, default_template = load_tokenizer(ns.tokenizer)
    template = default_template if ns.template == "auto" and default_template else ns.template
    result = render_conversation(template, tokenizer, messages, tools=tools, system=ns.system,
                                 add_generation_prompt=ns.add_generation_prompt)
    print(json.dumps(result, ensure_ascii=False))
    return 0


data = Command(help="check datasets (lf data check CONFIG) and render templates (lf data render)", run=_run_data)
