"""`lf export`: merge LoRA adapters into their base and write a standalone model folder.

The folder holds what plain transformers, vLLM, llama.cpp and Ollama load with no help from LF:
sharded safetensors in the chosen dtype (or one GGUF file), the tokenizer with its chat template,
the generation config and an Ollama `Modelfile`; a multimodal model also gets its processor
(`AutoProcessor` loads the folder), whose chat template writes image/video/audio message parts as the
model's own tokens. Everything is written into a temporary sibling
folder that is renamed at the end, so `export_dir` is never left half-written; every check that
needs no weights (keys, quantised base, target folder, GGUF support) runs before any weight loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from lf_data.args import DataArguments
from lf_data.atomic_files import share_tree, storage_error, write_yaml_atomic
from lf_data.config import AtLeastOne, Range, parse_sections, section, section_keys
from lf_data.errors import ConfigError
from lf_data.llamafactory_keys import translate_for
from lf_data.run_folder import ADAPTER_CONFIG, VALUE_HEAD_FILE, base_model, resolve_template
from lf_models.args import FinetuningArguments, ModelArguments, check_model_combination

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
    export_device: Literal["cpu", "auto"] = "cpu"
    """Where the merge runs: cpu, or auto (the GPUs when there are any, else cpu)."""
    export_legacy_format: bool = False
    """false: safetensors. LF never writes pickled .bin weights, so true is refused."""
    export_quantization_bit: int | None = None
    """GPTQ-quantise the exported model to 2, 3, 4 or 8 bits (needs a CUDA GPU, gptqmodel and optimum)."""
    export_quantization_dataset: str | None = None
    """GPTQ calibration text: a local .json/.jsonl/.csv/.parquet/.txt file or a hub dataset id, with a `text` column."""
    export_quantization_nsamples: Annotated[int, AtLeastOne] = 128
    """GPTQ: number of calibration samples."""
    export_quantization_maxlen: Annotated[int, AtLeastOne] = 1024
    """GPTQ: tokens per calibration sample."""
    export_hub_model_id: str | None = None
    """Also upload the exported folder to this Hugging Face repository (token: hf_hub_token, HF_TOKEN or the login)."""

    def __post_init__(self) -> None:
        if not self.export_dir:
            raise ConfigError("`export_dir` is required: the folder the merged model is written to.")
        if self.template == "":
            self.template = None
        if self.export_legacy_format:
            raise ConfigError("export_legacy_format: true asks for pickled .bin weights; LF writes only safetensors "
                              "(pickles can run code when loaded). Remove it or set it to false.")
        if self.export_quantization_bit is not None:
            if self.export_quantization_bit not in GPTQ_BITS:
                raise ConfigError(f"export_quantization_bit={self.export_quantization_bit}: GPTQ quantises to 2, 3, "
                                  "4 or 8 bits.")
            if not self.export_quantization_dataset:
                raise ConfigError("export_quantization_bit needs export_quantization_dataset: the calibration text "
                                  "(a file with a `text` column, or a hub dataset id).")
            if self.export_format == "gguf":
                raise ConfigError("export_quantization_bit is GPTQ for safetensors; for GGUF choose "
                                  "export_quantization (f16 or q8_0).")
        if self.export_format == "gguf":
            if self.export_dtype != "auto":
                raise ConfigError("export_dtype applies to safetensors; for GGUF choose export_quantization "
                                  "(f32, f16 or q8_0).")
            self.export_quantization = self.export_quantization or "f16"
        elif self.export_quantization is not None:
            raise ConfigError("export_quantization applies to export_format: gguf; for safetensors choose "
                              "export_dtype.")


GPTQ_BITS = (2, 3, 4, 8)
EXPORT_SECTIONS = (ModelArguments, ExportArguments, DataArguments, FinetuningArguments)
# Keys LlamaFactory's export parser takes (its model, data, finetuning and generating arguments) that
# change nothing in an export: accepted so its recipes run unchanged. Keys LF knows are typed instead.
INFER_DTYPES = ("auto", "float32", "float16", "bfloat16")


def export_keys() -> set[str]:
    """Every key `lf export` accepts: its sections' and the LlamaFactory keys its export parser takes
    (`lf_data.llamafactory_keys`: the ones LF does not use here are accepted and ignored)."""
    from lf_data.llamafactory_keys import COMMAND_GROUPS, KEYS

    keys = {key for key, entry in KEYS.items() if entry.group in COMMAND_GROUPS["export"]} | {"infer_dtype"}
    for cls in EXPORT_SECTIONS:
        keys.update(section_keys(cls))
    return keys


def parse_export_config(config: dict[str, Any], source: str = "") -> tuple[ModelArguments, ExportArguments,
                                                                          DataArguments]:
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
    infer_dtype = config.pop("infer_dtype", None)  # LlamaFactory's name for the exported dtype
    if infer_dtype is not None and "export_dtype" not in config:
        if infer_dtype not in INFER_DTYPES:
            raise ConfigError(f"infer_dtype={infer_dtype!r}: choose one of {', '.join(INFER_DTYPES)}.")
        config["export_dtype"] = infer_dtype
    config = translate_for("export", config, *EXPORT_SECTIONS, source=source)
    model_args, export_args, data_args, finetuning_args = parse_sections(config, *EXPORT_SECTIONS, source=source)
    check_model_combination(model_args, finetuning_args)
    if export_args.export_quantization_bit is not None and adapters:
        raise ConfigError("export_quantization_bit quantises a finished model: merge the adapters first (one `lf "
                          "export` without it), then quantise that folder (a second `lf export` with "
                          "model_name_or_path set to it).")
    if model_args.quantization_bit is not None:
        raise ConfigError(f"quantization_bit={model_args.quantization_bit}: adapters cannot be merged into a "
                          "quantised model, and the export would be quantised. Remove quantization_bit: the "
                          "adapter trained with QLoRA merges into the full-precision base.")
    return model_args, export_args, data_args


def _check_adapter(adapter: str) -> None:
    from lf_models.loader import HUB_ID

    path = Path(adapter).expanduser()
    if path.is_dir():
        if not (path / ADAPTER_CONFIG).is_file():
            raise ConfigError(f"adapter_name_or_path {adapter!r} is not a LoRA/OFT adapter folder (no adapter_config.json).")
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
def prepare_tokenizer(model_args: ModelArguments, source: Any, template: Any, explicit_template: bool) -> Any:
    """The adapter's tokenizer when it saved one (it carries the chat template it was trained with),
    else the base's. A template named in the export config replaces the tokenizer's chat template;
    otherwise the known template only fills in a missing one."""
    from transformers import AutoTokenizer

    from lf_data.templates import Template
    from lf_models.loader import load_tokenizer

    adapters = model_args.adapter_name_or_path or []
    saved = [a for a in adapters[-1:] if any((Path(a) / f).is_file() for f in TOKENIZER_FILES)]
    if saved:
        tokenizer = AutoTokenizer.from_pretrained(saved[0], trust_remote_code=model_args.trust_remote_code)
    else:
        tokenizer = load_tokenizer(dataclasses.replace(model_args, new_special_tokens=None), source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(template, Template) and (explicit_template or not tokenizer.chat_template):
        tokenizer.chat_template = template.to_jinja()
    return tokenizer


def load_export_processor(plan: ExportPlan, tokenizer: Any) -> Any:
    """The processor of a multimodal model (None for a text model), with the exported tokenizer: the
    adapter's run folder's when it saved one (its training settings), else the base model's. Loaded
    before any weight, so a missing processor or package stops the export at once."""
    from lf_models.families import family_for
    from lf_models.media import MediaLimits, load_media_inputs, media_chat_template

    family = family_for(plan.hf_config)
    if family is None or not family.vlm:
        return None
    processor = load_media_inputs(plan.source.path, tokenizer, dict(family.markers), MediaLimits(),
                                  folders=(plan.model.adapter_name_or_path or [])[-1:],
                                  trust_remote_code=plan.model.trust_remote_code).processor
    if tokenizer.chat_template:
        tokenizer.chat_template = media_chat_template(tokenizer.chat_template, dict(family.markers))
    processor.chat_template = tokenizer.chat_template or processor.chat_template
    return processor


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


def modelfile(template: Any, tokenizer: Any, model_file: str = ".") -> str:
    """An Ollama Modelfile: FROM the export, its prompt TEMPLATE, stop words and default SYSTEM prompt."""
    from lf_data.templates import Template

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


def _set_generation_config(model: Any, tokenizer: Any, template: Any) -> None:
    """End generation at the tokenizer's eos and the template's stop words (when they are single tokens)."""
    from lf_data.templates import Template

    config = model.generation_config
    eos = config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
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


def load_merged_model(model_args: ModelArguments, tokenizer: Any, dtype: Any, source: Any,
                      device_map: Any = None) -> Any:
    """The base in `dtype` with every adapter merged in (peft merge_and_unload), on `device_map`'s devices."""
    import torch

    from lf_models.args import FinetuningArguments
    from lf_models.loader import load_model
    from lf_models.precision import Precision

    precision = Precision(bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16)
    model_args = dataclasses.replace(model_args, new_special_tokens=None)
    model_args.resize_vocab = True  # an adapter trained with new tokens saved its larger embeddings
    model = load_model(model_args, FinetuningArguments(), precision, is_trainable=False, source=source,
                       tokenizer=tokenizer, device_map=device_map)
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
    stage: str = "sft"  # LlamaFactory's key; rm also copies the value head
    chat_template: Any = None
    """The template object (with default_system / tool_format applied), or None when none is known."""

    def resolved(self) -> dict[str, Any]:
        return {"model_name_or_path": self.model.model_name_or_path,
                "adapter_name_or_path": self.model.adapter_name_or_path,
                **dataclasses.asdict(self.export), "template": self.template}

    def describe(self) -> list[str]:
        adapters = self.model.adapter_name_or_path or []
        what = "GGUF " + str(self.export.export_quantization) if self.export.export_format == "gguf" \
            else f"safetensors ({self.export.export_dtype}, shards of {self.export.export_size:g} GB)"
        if self.export.export_quantization_bit is not None:
            what = (f"safetensors GPTQ {self.export.export_quantization_bit}-bit (calibrated on "
                    f"{self.export.export_quantization_nsamples} x {self.export.export_quantization_maxlen} tokens of "
                    f"{self.export.export_quantization_dataset})")
        where = "on the GPUs" if self.export.export_device == "auto" and _cuda() else "on the CPU"
        lines = [f"merge {len(adapters)} adapter(s) {', '.join(adapters)} into {self.model.model_name_or_path} {where}"
                 if adapters else f"load {self.model.model_name_or_path} {where} (no adapters to merge)",
                 f"write {what} with template {self.template or 'the tokenizer’s own'} to {self.target}"
                 + (" (replacing it)" if self.target.exists() else "")]
        from lf_models.families import family_for

        family = family_for(self.hf_config)
        if family is not None and family.vlm and self.export.export_format != "gguf":
            lines.append(f"save its processor ({' and '.join(family.media)}) with the chat template")
        if self.stage == "rm":
            lines.append(f"copy the value head ({VALUE_HEAD_FILE}) when the model or adapter has one")
        if self.export.export_hub_model_id:
            lines.append(f"upload the folder to the Hugging Face repository {self.export.export_hub_model_id}")
        return lines


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _installed(module: str) -> bool:
    from lf_models.quantization import _installed as installed

    return installed(module)


def check_gptq_environment(bits: int) -> None:
    """GPTQ runs through transformers' GPTQConfig, that is optimum and gptqmodel, on a CUDA GPU."""
    missing = ([] if _cuda() else ["a CUDA GPU"]) + [m for m in ("gptqmodel", "optimum") if not _installed(m)]
    if missing:
        packages = [m for m in missing if m != "a CUDA GPU"]
        fix = f"pip install {' '.join(packages)}" + (" on a machine with a CUDA GPU" if "a CUDA GPU" in missing else "") \
            if packages else "run it on a machine with a CUDA GPU"
        raise ConfigError(f"export_quantization_bit={bits} (GPTQ) needs {', '.join(missing)}, which this machine "
                          f"lacks: {fix}.")


def _check_gptq_dataset(name: str) -> None:
    from lf_models.loader import HUB_ID

    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() not in CALIBRATION_BUILDERS:
            raise ConfigError(f"export_quantization_dataset {name!r}: calibration text is read from "
                              f".{', .'.join(s[1:] for s in CALIBRATION_BUILDERS)} files (rows with a `text` column).")
    elif path.exists() or not HUB_ID.match(name) or name.startswith((".", "~")) \
            or path.suffix.lower() in CALIBRATION_BUILDERS:  # a file name, not a hub id
        raise ConfigError(f"export_quantization_dataset {name!r} does not exist; give a file with a `text` column "
                          "or a hub dataset id.")


def _check_hub_upload(repo_id: str, token: str | None) -> None:
    """A valid repository id and a token to write with, before any weight loads."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"export_hub_model_id {repo_id!r} is not a repository id (user/name): {err}") from None
    if not (token or get_token()):
        raise ConfigError("export_hub_model_id needs a Hugging Face token with write access: set hf_hub_token, or "
                          "HF_TOKEN, or run `hf auth login`.")


def push_to_hub(folder: Path, repo_id: str, token: str | None) -> str:
    """Upload the finished export folder (the repository is created if missing); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   commit_message="Upload a model exported by lf export")
    except Exception as err:  # network, permissions: the export itself is finished and stays
        text = " ".join(str(err).split())[:300]
        raise ConfigError(f"the model is in {folder}, but uploading it to {repo_id} failed ({type(err).__name__}: "
                          f"{text}); upload it later with: hf upload {repo_id} {folder}") from None
    return str(getattr(commit, "commit_url", commit))


CALIBRATION_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
CALIBRATION_TRIES = 100


def calibration_samples(tokenizer: Any, dataset: str, nsamples: int, maxlen: int, seed: int = 42,
                        token: str | None = None, cache_dir: str | None = None) -> list[dict[str, list[list[int]]]]:
    """GPTQ calibration inputs: `nsamples` windows of exactly `maxlen` tokens, each cut at a random place from
    a random row of `dataset` that is longer than `maxlen` (LlamaFactory's sampling; seeded here)."""
    import random

    import datasets

    path = Path(dataset).expanduser()
    if path.is_file():
        rows = datasets.load_dataset(CALIBRATION_BUILDERS[path.suffix.lower()], data_files=str(path), split="train")
    else:
        rows = datasets.load_dataset(dataset, split="train", token=token, cache_dir=cache_dir)
    if "text" not in rows.column_names:
        raise ConfigError(f"export_quantization_dataset {dataset!r} has no `text` column (it has "
                          f"{', '.join(rows.column_names)}).")
    texts = rows["text"]
    rng = random.Random(seed)
    tokenized: dict[int, list[int]] = {}
    samples = []
    for _ in range(nsamples):
        for _ in range(CALIBRATION_TRIES):
            index = rng.randrange(len(texts))
            if index not in tokenized:
                tokenized[index] = tokenizer(str(texts[index] or ""), add_special_tokens=False)["input_ids"]
            ids = tokenized[index]
            if len(ids) > maxlen:
                break
        else:
            raise ConfigError(f"export_quantization_dataset {dataset!r}: {CALIBRATION_TRIES} random rows had none longer "
                              f"than export_quantization_maxlen={maxlen} tokens; lower export_quantization_maxlen.")
        start = rng.randrange(len(ids) - maxlen)
        samples.append({"input_ids": [ids[start:start + maxlen]], "attention_mask": [[1] * maxlen]})
    return samples


def load_gptq_model(model_args: ModelArguments, tokenizer: Any, source: Any, export_args: ExportArguments) -> Any:
    """The model quantised with GPTQ while it loads (transformers' GPTQConfig: optimum + gptqmodel, fp16)."""
    import torch
    from transformers import AutoConfig, GPTQConfig

    from lf_models.families import model_class_for

    samples = calibration_samples(tokenizer, export_args.export_quantization_dataset,
                                  export_args.export_quantization_nsamples, export_args.export_quantization_maxlen,
                                  token=model_args.hf_hub_token, cache_dir=model_args.cache_dir)
    config = AutoConfig.from_pretrained(source.path, trust_remote_code=model_args.trust_remote_code)
    quantization = GPTQConfig(bits=export_args.export_quantization_bit, tokenizer=tokenizer, dataset=samples)
    return model_class_for(config).from_pretrained(source.path, config=config, quantization_config=quantization,
                                                   device_map="auto", dtype=torch.float16,
                                                   trust_remote_code=model_args.trust_remote_code)


def _copy_value_head(plan: ExportPlan, folder: Path) -> None:
    """stage: rm keeps the reward model's value head next to the merged weights (LlamaFactory does the same)."""
    origin = Path((plan.model.adapter_name_or_path or [plan.source.path])[-1]).expanduser()
    if (origin / VALUE_HEAD_FILE).is_file():
        shutil.copy(origin / VALUE_HEAD_FILE, folder / VALUE_HEAD_FILE)
        logger.info("copied the value head from %s", origin)
    else:
        logger.warning("stage: rm, but %s has no %s; the export has no value head", origin, VALUE_HEAD_FILE)


def check_export(config: dict[str, Any], source: str = "") -> ExportPlan:
    """Keys, adapters, target folder, the base's config (not quantised, writable as GGUF) and the template."""
    from transformers import AutoConfig

    from lf_models.loader import resolve_model

    model_args, export_args, data_args = parse_export_config(config, source)
    if export_args.export_quantization_bit is not None:  # the hardware answer comes before any download
        check_gptq_environment(export_args.export_quantization_bit)
        _check_gptq_dataset(export_args.export_quantization_dataset)
    if export_args.export_hub_model_id:
        _check_hub_upload(export_args.export_hub_model_id, model_args.hf_hub_token)
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
    chat_template = None
    if template_name:
        from lf_data.templates import get_template, with_options

        chat_template = with_options(get_template(template_name), data_args)  # an unknown name fails here
    from lf_data.config import coerce_value
    from lf_data.stages import StageName

    stage = coerce_value("stage", config.get("stage") or "sft", StageName)
    return ExportPlan(model_args, export_args, target, model_source, hf_config, template_name, stage, chat_template)


def run_export(config: dict[str, Any], source: str = "") -> Path:
    plan = check_export(config, source)
    model_args, export_args, target = plan.model, plan.export, plan.target
    model_source, hf_config, template = plan.source, plan.hf_config, plan.chat_template

    import torch

    dtype = torch.float32 if export_args.export_format == "gguf" else _export_dtype(export_args.export_dtype, hf_config)
    tokenizer = prepare_tokenizer(model_args, model_source, template, bool(export_args.template))
    processor = load_export_processor(plan, tokenizer) if export_args.export_format != "gguf" else None
    gptq = export_args.export_quantization_bit is not None
    if gptq:
        model = load_gptq_model(model_args, tokenizer, model_source, export_args)
    else:
        device_map = "auto" if export_args.export_device == "auto" and torch.cuda.is_available() else None
        model = load_merged_model(model_args, tokenizer, dtype, model_source, device_map)
    _set_generation_config(model, tokenizer, template)
    adapters = model_args.adapter_name_or_path or []
    logger.info("merged %d adapter(s) into %s", len(adapters), model_args.model_name_or_path)

    with staged_folder(target) as tmp:
        if export_args.export_format == "gguf":
            from lf_models.gguf_export import write_gguf

            pre = _source_gguf_pre_tokenizer(model_source.path)
            model_file = f"{target.name}-{export_args.export_quantization}.gguf"
            write_gguf(model, tokenizer, tmp / model_file, export_args.export_quantization,
                       pre_tokenizer=pre, name=target.name)
            (tmp / MODELFILE).write_text(modelfile(template, tokenizer, f"./{model_file}"), encoding="utf-8")
        else:
            model_file = None
            if not gptq:  # GPTQ weights stay as quantised (fp16 scales)
                model.to(dtype)
            model.config.use_cache = True
            model.save_pretrained(tmp, max_shard_size=max(1, int(export_args.export_size * 1e9)))
            tokenizer.save_pretrained(tmp)
            if processor is not None:  # image/video processor or feature extractor, and its chat template
                processor.save_pretrained(tmp)
            (tmp / MODELFILE).write_text(modelfile(template, tokenizer), encoding="utf-8")
        if plan.stage == "rm":
            _copy_value_head(plan, tmp)
        write_yaml_atomic(tmp / EXPORT_CONFIG, plan.resolved())
    print(summary(target, export_args, model_file))
    if export_args.export_hub_model_id:
        url = push_to_hub(target, export_args.export_hub_model_id, model_args.hf_hub_token)
        print(f"Uploaded to https://huggingface.co/{export_args.export_hub_model_id} ({url})")
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


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside `target` that replaces it only once the block has written everything:
    a crash or a full disk leaves `target` as it was (and the next run removes the leftovers)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        _replace_dir(share_tree(tmp), target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(err, target.parent, f"{target} is as it was.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
