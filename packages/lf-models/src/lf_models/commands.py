"""`lf export`: a light module (torch is imported only when the command runs)."""

from __future__ import annotations

from lf_data.cli import Command, check_only, print_check, read_command_config, setup_logging


def _run_export(argv: list[str]) -> int:
    config, source = read_command_config(
        "lf export",
        "Merge LoRA adapters into their base model and write a standalone folder (sharded safetensors or one "
        "GGUF file, tokenizer with chat template, Ollama Modelfile).",
        "Keys: model_name_or_path, adapter_name_or_path, template, export_dir, export_size (GB), "
        "export_dtype (auto|float32|float16|bfloat16), export_format (safetensors|gguf), "
        "export_quantization (f32|f16|q8_0), overwrite_export_dir, trust_remote_code. "
        "Example: lf export adapter_name_or_path=saves/quickstart export_dir=models/lumen", argv)
    from lf_models.export import parse_export_config

    parse_export_config(config, source)  # keys and values answer before torch is imported
    setup_logging()
    if check_only(argv):
        from lf_models.export import check_export

        plan = check_export(config, source)
        return print_check("lf export", source, plan.describe(), plan.resolved())
    from lf_models.export import run_export

    run_export(config, source=source)
    return 0


export = Command(help="merge adapters and export a model (safetensors or GGUF, lf export CONFIG [key=value ...] "
                      "[--check])", run=_run_export)
