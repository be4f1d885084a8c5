"""`lf export`: merge LoRA adapters into their base and write a standalone model folder.

The folder holds what plain transformers, vLLM, llama.cpp and Ollama load with no help from LF:
sharded safetensors in the chosen dtype (or one GGUF file), the tokenizer with its chat template,
the generation config and an Ollama `Modelfile`. Everything is written into a temporary sibling
folder that is renamed at the end, so `export_dir` is never left half-written; every check that
needs no weights (keys, quantised base, target folder, GGUF support) runs before any weight loads.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from lf_data.atomic_files import share_tree, storage_error, write_yaml_atomic
from lf_data.config import Range, parse_sections, section
from lf_data.errors import ConfigError
from lf_data.run_folder import ADAPTER_CONFIG, base_model, resolve_template
from lf_models.args import ModelArguments

logger = logging.getLogger(__name__)
MODELFILE = "Modelfile"
EXPORT_CONFIG = "lf_export.yaml"
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
CHATML_TEMPLATE = ('{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
                   '{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
                   '<|im_start|>assistant\n')


@section
class ExportArguments:
    export_dir: str | None = None
    """Folder to write the merged model to (required; written under a temporary name, then renamed)."""
    export_size: Annotated[float, Range(gt=0, hint="a number of GB, for example 5")] = 5.0
    """Largest safetensors shard, in GB."""
    export_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """dtype of the saved weights; auto keeps the base model's."""
    export_format: Literal["safetensors", "gguf"] = "safetensors"
    """safetensors: a Hugging Face folder; gguf: one llama.cpp/Ollama file (Llama, Mistral, Qwen2)."""
    export_quantization: Literal["f32", "f16", "q8_0"] | None = None
    """GGUF tensor type: f32, f16 (default) or q8_0."""
    overwrite_export_dir: bool = False
    """Replace a non-empty export_dir."""
    template: str | None = None
    """Chat template to save with the tokenizer (and to write the Modelfile from); default: the adapter's."""
    finetuning_type: Literal["lora"] = "lora"
    """Accepted for LlamaFactory recipes; adapters are LoRA adapters."""

    def __post_init__(self) -> None:
        if not self.export_dir:
            raise ConfigError("`export_dir` is required: the folder the merged model is written to.")
        if self.template == "":
            self.template = None
        if self.export_format == "gguf":
            if self.export_dtype != "auto":
                raise ConfigError("export_dtype applies to safetensors; for GGUF choose export_quantization "
                                  "(f32, f16 or q8_0).")
            self.export_quantization = self.export_quantization or "f16"
        elif self.export_quantization is not None:
            raise ConfigError("export_quantization applies to export_format: gguf; for safetensors choose "
                              "export_dtype.")


EXPORT_SECTIONS = (ModelArguments, ExportArguments)


def parse_export_config(config: dict[str, Any], source: str = "") -> tuple[ModelArguments, ExportArguments]:
    """Keys checked and typed; the model reference filled from the adapter's run when it is missing."""
    config = dict(config)
    raw = config.get("adapter_name_or_path") or []
    adapters = [str(a).strip() for a in (raw.split(",") if isinstance(raw, str) else raw) if str(a).strip()]
    for adapter in adapters:
        _check_adapter(adapter)
    if not config.get("model_name_or_path") and adapters:  # `lf export adapter_name_or_path=saves/run ...`
        config["model_name_or_path"] = base_model(adapters)
        if not config["model_name_or_path"]:
            local = not Path(adapters[-1]).expanduser().is_dir()
            raise ConfigError(f"adapter_name_or_path {adapters[-1]!r} " + (
                "is not a folder here; give the output_dir of an `lf train` run, or model_name_or_path too if it "
                "is an adapter on the hub." if local else
                "does not say which model it was trained on; give model_name_or_path."))
    model_args, export_args = parse_sections(config, *EXPORT_SECTIONS, source=source)
    if model_args.quantization_bit is not None:
        raise ConfigError(f"quantization_bit={model_args.quantization_bit}: adapters cannot be merged into a "
                          "quantised model, and the export would be quantised. Remove quantization_bit: the "
                          "adapter trained with QLoRA merges into the full-precision base.")
    return model_args, export_args


def _check_adapter(adapter: str) -> None:
    from lf_models.loader import HUB_ID

    path = Path(adapter).expanduser()
    if path.is_dir():
        if not (path / ADAPTER_CONFIG).is_file():
            raise ConfigError(f"adapter_name_or_path {adapter!r} is not a LoRA adapter folder (no adapter_config.json).")
    elif path.exists() or not HUB_ID.match(adapter) or adapter.startswith((".", "~")) or "/" not in adapter:
        raise ConfigError(f"adapter_name_or_path {adapter!r} does not exist; give the folder `lf train` wrote "
                          "(output_dir) or a hub id of a peft adapter.")


def _check_export_dir(export_args: ExportArguments, model_args: ModelArguments) -> Path:
    target = Path(export_args.export_dir).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"export_dir {str(target)!r} is a file; choose a folder path.")
    sources = [model_args.model_name_or_path, *(model_args.adapter_name_or_path or [])]
    for source in sources:
        resolved = Path(source).expanduser().resolve()
        if resolved == target or target in resolved.parents:
            raise ConfigError(f"export_dir {str(target)!r} is or contains the model or adapter being exported; "
                              "choose another folder.")
    if target.is_dir() and any(target.iterdir()) and not export_args.overwrite_export_dir:
        raise ConfigError(f"export_dir {str(target)!r} is not empty. Choose another folder, or set "
                          "overwrite_export_dir=true to replace it.")
    return target


def _check_not_quantised(hf_config: Any, model_args: ModelArguments) -> None:
    from lf_models.quantization import existing_quantization

    method = existing_quantization(hf_config)
    if method is not None:
        raise ConfigError(f"{model_args.model_name_or_path} is quantised ({method}): adapters cannot be merged into "
                          "quantised weights and the export would lose precision. Point model_name_or_path at the "
                          "full-precision model the adapter was trained from.")


# -- tokenizer, template and Modelfile -------------------------------------------------------------
def prepare_tokenizer(model_args: ModelArguments, source: Any, template_name: str | None,
                      explicit_template: bool) -> Any:
    """The adapter's tokenizer when it saved one (it carries the chat template it was trained with),
    else the base's. A template named in the export config replaces the tokenizer's chat template;
    otherwise the known template only fills in a missing one."""
    from transformers import AutoTokenizer

    from lf_data.templates import Template, get_template
    from lf_models.loader import load_tokenizer

    adapters = model_args.adapter_name_or_path or []
    saved = [a for a in adapters[-1:] if any((Path(a) / f).is_file() for f in TOKENIZER_FILES)]
    if saved:
        tokenizer = AutoTokenizer.from_pretrained(saved[0], trust_remote_code=model_args.trust_remote_code)
    else:
        tokenizer = load_tokenizer(dataclasses.replace(model_args, new_special_tokens=None), source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    template = get_template(template_name) if template_name else None
    if isinstance(template, Template) and (explicit_template or not tokenizer.chat_template):
        tokenizer.chat_template = template.to_jinja()
    return tokenizer


def _go_literal(text: str) -> str:
    """Text as a literal inside an Ollama (Go) template."""
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(template: Any, tokenizer: Any) -> str:
    """An Ollama TEMPLATE (Go syntax) that renders the same prompts as an LF chat template."""
    def fill(fmt: str, content: str) -> str:
        text = _go_literal(fmt.replace("{bos}", tokenizer.bos_token or "").replace("{eos}", tokenizer.eos_token or ""))
        return text.replace("{content}", content)

    prefix = fill(template.prefix, "")
    system = fill(template.format_system, "{{ .System }}")
    user = fill(template.format_user, "{{ .Content }}") + fill(template.generation_prompt, "")
    assistant = fill(template.format_assistant, "{{ .Content }}")
    return (f"{prefix}{{{{ if .System }}}}{system}{{{{ end }}}}"
            f'{{{{ range .Messages }}}}{{{{ if eq .Role "user" }}}}{user}'
            f'{{{{ else if eq .Role "assistant" }}}}{assistant}{{{{ end }}}}{{{{ end }}}}')


def modelfile(template_name: str | None, tokenizer: Any, model_file: str = ".") -> str:
    """An Ollama Modelfile: FROM the export, its prompt TEMPLATE, stop words and default SYSTEM prompt."""
    from lf_data.templates import Template, get_template

    template = get_template(template_name) if template_name else None
    lines = ["# Ollama Modelfile written by `lf export`. Create the model with:",
             "#   ollama create my-model -f Modelfile", "", f"FROM {model_file}", ""]
    stops: list[str] = []
    if isinstance(template, Template):
        lines.append(f'TEMPLATE """{ollama_template(template, tokenizer)}"""')
        stops = list(template.stop_words)
        if template.default_system:
            lines += ["", f'SYSTEM """{template.default_system}"""']
    else:
        lines.insert(3, "# No LF template is known for this model: the prompt format below is ChatML; edit it if "
                        "the model was trained on another format.")
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        stops = ["<|im_end|>"]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines.append("")
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def _set_generation_config(model: Any, tokenizer: Any, template_name: str | None) -> None:
    """End generation at the tokenizer's eos and the template's stop words (when they are single tokens)."""
    from lf_data.templates import Template, get_template

    config = model.generation_config
    eos = config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    template = get_template(template_name) if template_name else None
    words = [tokenizer.eos_token] + (list(template.stop_words) if isinstance(template, Template) else [])
    unk = tokenizer.unk_token_id
    for word in words:
        if word is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(word)
        if isinstance(token_id, int) and token_id != unk and token_id not in ids:
            ids.append(token_id)
    if ids:
        config.eos_token_id = ids[0] if len(ids) == 1 else ids
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id


# -- the export -----------------------------------------------------------------------------------
def _export_dtype(name: str, hf_config: Any) -> Any:
    import torch

    if name == "auto":
        dtype = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
        return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32
    return getattr(torch, name)


def load_merged_model(model_args: ModelArguments, tokenizer: Any, dtype: Any, source: Any) -> Any:
    """The base in `dtype` with every adapter merged in (peft merge_and_unload)."""
    import torch

    from lf_models.args import FinetuningArguments
    from lf_models.loader import load_model
    from lf_models.precision import Precision

    precision = Precision(bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16)
    model_args = dataclasses.replace(model_args, new_special_tokens=None)
    model_args.resize_vocab = True  # an adapter trained with new tokens saved its larger embeddings
    model = load_model(model_args, FinetuningArguments(), precision, is_trainable=False, source=source,
                       tokenizer=tokenizer)
    if hasattr(model, "merge_and_unload"):  # defensive: load_model already merges when not training
        model = model.merge_and_unload()
    model.requires_grad_(False)
    return model


@dataclasses.dataclass
class ExportPlan:
    """An export checked in full, before any weight loads."""

    model: ModelArguments
    export: ExportArguments
    target: Path
    source: Any  # lf_models.loader.ModelSource
    hf_config: Any
    template: str | None

    def resolved(self) -> dict[str, Any]:
        return {"model_name_or_path": self.model.model_name_or_path,
                "adapter_name_or_path": self.model.adapter_name_or_path,
                **dataclasses.asdict(self.export), "template": self.template}

    def describe(self) -> list[str]:
        adapters = self.model.adapter_name_or_path or []
        what = "GGUF " + str(self.export.export_quantization) if self.export.export_format == "gguf" \
            else f"safetensors ({self.export.export_dtype}, shards of {self.export.export_size:g} GB)"
        return [f"merge {len(adapters)} adapter(s) {', '.join(adapters)} into {self.model.model_name_or_path}",
                f"write {what} with template {self.template or 'the tokenizer’s own'} to {self.target}"
                + (" (replacing it)" if self.target.exists() else "")]


def check_export(config: dict[str, Any], source: str = "") -> ExportPlan:
    """Keys, adapters, target folder, the base's config (not quantised, writable as GGUF) and the template."""
    from transformers import AutoConfig

    from lf_models.loader import resolve_model

    model_args, export_args = parse_export_config(config, source)
    target = _check_export_dir(export_args, model_args)
    model_source = resolve_model(model_args)
    try:
        hf_config = AutoConfig.from_pretrained(model_source.path, trust_remote_code=model_args.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not read the config of {model_source.path!r}: {err}") from None
    _check_not_quantised(hf_config, model_args)
    if export_args.export_format == "gguf":
        from lf_models.gguf_export import check_gguf_supported

        check_gguf_supported(hf_config, export_args.export_quantization)
    template_name = resolve_template(export_args.template, model_args.adapter_name_or_path,
                                     model_source.default_template)
    if template_name:
        from lf_data.templates import get_template

        get_template(template_name)  # an unknown name fails here, with the closest one
    return ExportPlan(model_args, export_args, target, model_source, hf_config, template_name)


def run_export(config: dict[str, Any], source: str = "") -> Path:
    plan = check_export(config, source)
    model_args, export_args, target = plan.model, plan.export, plan.target
    model_source, hf_config, template_name = plan.source, plan.hf_config, plan.template

    import torch

    dtype = torch.float32 if export_args.export_format == "gguf" else _export_dtype(export_args.export_dtype, hf_config)
    tokenizer = prepare_tokenizer(model_args, model_source, template_name, bool(export_args.template))
    model = load_merged_model(model_args, tokenizer, dtype, model_source)
    _set_generation_config(model, tokenizer, template_name)
    adapters = model_args.adapter_name_or_path or []
    logger.info("merged %d adapter(s) into %s", len(adapters), model_args.model_name_or_path)

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        if export_args.export_format == "gguf":
            from lf_models.gguf_export import write_gguf

            pre = _source_gguf_pre_tokenizer(model_source.path)
            model_file = f"{target.name}-{export_args.export_quantization}.gguf"
            write_gguf(model, tokenizer, tmp / model_file, export_args.export_quantization,
                       pre_tokenizer=pre, name=target.name)
            (tmp / MODELFILE).write_text(modelfile(template_name, tokenizer, f"./{model_file}"), encoding="utf-8")
        else:
            model_file = None
            model.to(dtype)
            model.config.use_cache = True
            model.save_pretrained(tmp, max_shard_size=max(1, int(export_args.export_size * 1e9)))
            tokenizer.save_pretrained(tmp)
            (tmp / MODELFILE).write_text(modelfile(template_name, tokenizer), encoding="utf-8")
        write_yaml_atomic(tmp / EXPORT_CONFIG, plan.resolved())
        _replace_dir(share_tree(tmp), target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(err, target.parent, f"{target} is as it was.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(summary(target, export_args, model_file))
    return target


def _source_gguf_pre_tokenizer(path: str) -> str | None:
    """llama.cpp's pre-tokenizer name when the base was converted from a GGUF file (lf_models.gguf_import)."""
    from lf_models.gguf_import import COMPLETE_MARKER

    marker = Path(path) / COMPLETE_MARKER
    if not marker.is_file():
        return None
    original = Path(marker.read_text(encoding="utf-8").strip())
    if not original.is_file():
        return None
    try:
        return str(_gguf_metadata(original).get("tokenizer.ggml.pre") or "") or None
    except Exception:  # noqa: BLE001 - only a hint for llama.cpp; the export does not depend on it
        return None


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """A GGUF file's metadata; transformers' reader skips the big token arrays (seconds faster)."""
    try:
        from transformers.integrations.gguf.reader import read_gguf_metadata
    except ImportError:
        from gguf import GGUFReader

        return {key: field.contents() for key, field in GGUFReader(path).fields.items()}
    return read_gguf_metadata(str(path))[0]


def _remove_stale(target: Path) -> None:
    """Temporary folders an export to the same target left when it was killed (never a finished one)."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.old-*"):
        if (stale / "previous").is_dir() and not target.exists():  # killed between the two renames
            os.replace(stale / "previous", target)
        shutil.rmtree(stale, ignore_errors=True)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished folder at `target`; an old folder is moved aside first and removed last."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / "previous")
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary(target: Path, export_args: ExportArguments, gguf_file: str | None) -> str:
    lines = ["", f"Done. The merged model is in {target}/", ""]
    if gguf_file:
        lines += [
            f"{gguf_file} ({export_args.export_quantization}) runs in llama.cpp and Ollama:",
            f"  llama-cli -m {target / gguf_file}",
            f"  cd {target} && ollama create my-model -f Modelfile && ollama run my-model",
            "",
            "and loads in plain transformers (de-quantised to float):",
            "  from transformers import AutoModelForCausalLM, AutoTokenizer",
            f"  tokenizer = AutoTokenizer.from_pretrained({str(target)!r}, gguf_file={gguf_file!r})",
            f"  model = AutoModelForCausalLM.from_pretrained({str(target)!r}, gguf_file={gguf_file!r})",
        ]
    else:
        lines += [
            "Load it with plain transformers (or vLLM: vllm serve " + str(target) + "):",
            "  from transformers import AutoModelForCausalLM, AutoTokenizer",
            f"  tokenizer = AutoTokenizer.from_pretrained({str(target)!r})",
            f"  model = AutoModelForCausalLM.from_pretrained({str(target)!r})",
            "",
            f"Ollama: cd {target} && ollama create my-model -f Modelfile",
        ]
    return "\n".join(lines)
