"""`lf export` and `lf expand`: a light module (torch is imported only when a command runs)."""

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


def _run_expand(argv: list[str]) -> int:
    config, source = read_command_config(
        "lf expand",
        "LLaMA Pro block expansion: add identity-initialised decoder blocks to a model (the expanded model "
        "gives the same outputs), to train only them with finetuning_type: freeze and use_llama_pro: true.",
        "Keys: model_name_or_path, num_expand (blocks to add; the layer count must be a multiple), output_dir, "
        "shard_size (e.g. 2GB), overwrite_output_dir, trust_remote_code. "
        "Example: lf expand model_name_or_path=meta-llama/Meta-Llama-3-8B-Instruct num_expand=8 "
        "output_dir=models/llama3-8b-pro", argv)
    from lf_models.llama_pro import check_expand

    setup_logging()
    plan = check_expand(config, source)  # keys, layer count and target answer before any weight loads
    if check_only(argv):
        return print_check("lf expand", source, plan.describe(), plan.resolved())
    from lf_models.llama_pro import run_expand

    run_expand(config, source=source)
    return 0


expand = Command(help="LLaMA Pro: add identity blocks to a model (lf expand CONFIG [key=value ...] [--check])",
                 run=_run_expand)
