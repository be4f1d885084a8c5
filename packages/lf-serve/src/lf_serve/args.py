"""The serving part of the configuration (LlamaFactory-compatible key names where one exists).

`parse_serve_config` splits one flat config among the data, model, generation and inference
sections and checks every key and combination before anything is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from lf_data.config import AtLeastOne, NonNegative, Range, section
from lf_data.errors import ConfigError
from lf_serve.limits import REPETITION_PENALTY, stop_problem


@section
class GeneratingArguments:
    do_sample: bool = True
    """Sample the next token (false: greedy decoding)."""
    temperature: Annotated[float, Range(ge=0, hint="0 is greedy decoding")] = 0.95
    """Sampling temperature; 0 means greedy."""
    top_p: Annotated[float, Range(gt=0, le=1)] = 0.7
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: Annotated[int, NonNegative] = 50
    """Keep only the k most likely tokens when sampling (0: no limit)."""
    num_beams: Annotated[int, AtLeastOne] = 1
    """Beam search width (1: no beam search; beams are not streamed token by token)."""
    max_new_tokens: Annotated[int, AtLeastOne] = 1024
    """Default cap on generated tokens (a request's max_tokens overrides it, within the context)."""
    repetition_penalty: Annotated[float, Range(ge=REPETITION_PENALTY[0], le=REPETITION_PENALTY[1],
                                               hint="1.0 is none")] = 1.0
    """Penalty (>1) on tokens already present."""
    length_penalty: float = 1.0
    """Beam search length penalty."""
    skip_special_tokens: bool = True
    """Drop special tokens from the decoded answer."""
    num_return_sequences: Annotated[int, AtLeastOne] = 1
    """Answers per request (the API's `n` overrides it)."""
    stop: list[str] | None = None
    """Extra strings that end generation, besides the template's stop words and eos."""

    def __post_init__(self) -> None:
        problem = stop_problem(self.stop)
        if problem:
            raise ConfigError(problem)


@section
class InferArguments:
    infer_backend: Literal["huggingface", "vllm"] = "huggingface"
    """Engine: `huggingface` (transformers, CPU or GPU) or `vllm` (GPU, `pip install lf-serve[vllm]`)."""
    infer_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights dtype at inference: auto is bf16/fp16 on a GPU that supports it, fp32 on CPU."""
    stage: Literal["sft", "rm"] = "sft"
    """`rm` loads the reward model's value head (saved with its adapter) for /v1/score/evaluation."""
    max_batch_size: Annotated[int, AtLeastOne] = 16
    """huggingface: most sequences generated together (the running batch, or one generate call)."""
    batch_wait_ms: Annotated[float, NonNegative] = 0.0
    """huggingface: how long an idle engine waits after a request for others to start with it
    (later ones join the running batch at the next step anyway; 0 adds no latency)."""
    cpu_packed_linear: bool = True
    """huggingface on a CPU, text models: run fp32 linear layers of 2^18 weights or more through oneDNN
    with weights packed at load (SmolLM2 decoded 1.25-1.35x faster, same greedy tokens); false: torch's
    default product."""
    vllm_maxlen: Annotated[int, Range(ge=16, hint="room for a prompt and an answer")] = 4096
    """vllm: maximum sequence length (prompt + answer)."""
    vllm_gpu_util: Annotated[float, Range(gt=0, le=1)] = 0.7
    """vllm: fraction of GPU memory vLLM may take."""
    vllm_enforce_eager: bool = False
    """vllm: disable CUDA graphs (less memory, slower)."""
    vllm_max_lora_rank: Annotated[int, AtLeastOne] = 32
    """vllm: the largest LoRA rank it must hold."""
    vllm_tensor_parallel_size: Annotated[int, AtLeastOne] = 1
    """vllm: GPUs one model is split across."""
    vllm_config: dict[str, Any] | None = None
    """vllm: extra engine arguments passed through unchanged."""
    served_model_name: str | None = None
    """The model id the API answers to (default: the adapter's or model's folder name)."""
    api_max_body_bytes: Annotated[int, Range(ge=1024, hint="smaller fits no request")] = 8 * 1024 * 1024
    """Largest request body the API accepts (413 beyond it)."""
    image_dir: str | None = None
    """Folder from which requests may name local image, video and audio files (unset: local paths are refused)."""
    allow_image_urls: bool = False
    """Let requests name http(s) image, video and audio URLs that the server fetches."""
    image_max_bytes: Annotated[int, AtLeastOne] = 20 * 1024 * 1024
    """Largest image (decoded data: URL, file or download) a request may bring."""
    video_max_bytes: Annotated[int, AtLeastOne] = 64 * 1024 * 1024
    """Largest video (decoded data: URL, file or download) a request may bring."""
    audio_max_bytes: Annotated[int, AtLeastOne] = 20 * 1024 * 1024
    """Largest sound (input_audio, data: URL, file or download) a request may bring."""
    media_max_pixels: Annotated[int, AtLeastOne] = 16 * 1024 * 1024
    """Largest image or video frame in pixels (width x height), read from its header before any pixel is
    decoded; larger ones are refused (image_max_pixels and video_max_pixels then scale accepted ones down,
    as in training)."""
    max_prompt_chars: Annotated[int, AtLeastOne] | None = None
    """Longest prompt text (characters, messages and tools together) a request may bring, refused before
    tokenising; unset: 16 x the model's context length."""


@dataclass
class ServePlan:
    data: Any  # lf_data.args.DataArguments
    model: Any  # lf_models.args.ModelArguments
    finetuning: Any  # lf_models.args.FinetuningArguments
    generating: GeneratingArguments
    infer: InferArguments

    def model_name(self) -> str:
        """The id the API serves this model under."""
        from pathlib import Path

        if self.infer.served_model_name:
            return self.infer.served_model_name
        ref = (self.model.adapter_name_or_path or [self.model.model_name_or_path])[-1]
        return Path(ref).name or ref


SECTIONS_DOC = "model, adapter, template, generation and inference keys (see packages/lf-serve/README.md)"


def parse_serve_config(config: dict[str, Any], source: str = "") -> ServePlan:
    """Every key typed and checked, cheap facts checked; nothing loaded yet."""
    from pathlib import Path

    from lf_data.args import DataArguments
    from lf_data.config import parse_sections
    from lf_data.llamafactory_keys import translate_for
    from lf_data.run_folder import base_model
    from lf_data.templates import get_template
    from lf_models.args import FinetuningArguments, ModelArguments, check_model_combination

    if not config.get("model_name_or_path") and config.get("adapter_name_or_path"):
        config = {**config, "model_name_or_path": base_model(config["adapter_name_or_path"])}  # the run's base
    sections = (DataArguments, ModelArguments, FinetuningArguments, GeneratingArguments, InferArguments)
    config = translate_for("chat", config, *sections, source=source)
    data, model, finetuning, generating, infer = parse_sections(config, *sections, source=source)
    check_model_combination(model, finetuning)
    if data.template is not None:
        get_template(data.template)
    for adapter in model.adapter_name_or_path or []:
        if not Path(adapter).expanduser().is_dir():
            raise ConfigError(f"adapter_name_or_path {adapter!r} is not a folder; give the output_dir of an LF "
                              "training run (it holds adapter_config.json).")
    if infer.image_dir is not None and not Path(infer.image_dir).is_dir():
        raise ConfigError(f"image_dir {infer.image_dir!r} is not a folder.")
    if infer.stage == "rm" and infer.infer_backend != "huggingface":
        raise ConfigError("stage: rm (reward scores) runs on infer_backend: huggingface.")
    return ServePlan(data, model, finetuning, generating, infer)


def generation_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(GeneratingArguments)]
