"""`lf export`: a light module (torch is imported only when the command runs)."""

from __future__ import annotations

import argparse

from lf_data.cli import Command


def _run_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lf export",
        description="Merge LoRA adapters into their base model and write a standalone folder (sharded "
                    "safetensors or one GGUF file, tokenizer with chat template, Ollama Modelfile).",
        epilog="Keys: model_name_or_path, adapter_name_or_path, template, export_dir, export_size (GB), "
               "export_dtype (auto|float32|float16|bfloat16), export_format (safetensors|gguf), "
               "export_quantization (f32|f16|q8_0), overwrite_export_dir, trust_remote_code. "
               "Example: lf export examples/merge_lora.yaml export_dir=models/lumen",
    )
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    ns = parser.parse_args(argv)
    config_path, overrides = ns.config, list(ns.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        config_path, overrides = None, [config_path, *overrides]

    import logging

    from lf_data.config import read_config

    config = read_config(config_path, overrides)
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s|%(name)s] %(message)s")
    for name in ("lf_data", "lf_models"):
        logging.getLogger(name).setLevel(logging.INFO)
    from lf_models.export import run_export

    run_export(config, source=config_path or "the command line")
    return 0


export = Command(help="merge adapters and export a model (safetensors or GGUF, lf export CONFIG [key=value ...])",
                 run=_run_export)
