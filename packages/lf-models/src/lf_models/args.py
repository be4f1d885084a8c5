"""The model and fine-tuning parts of the configuration (LlamaFactory-compatible key names)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from lf_data.config import AtLeastOne, Fraction, Positive, Range, section
from lf_data.errors import ConfigError

ADAPTER_TYPES = ("lora", "oft")
"""The finetuning types that train a peft adapter (saved alone, merged by `lf export`)."""
MULTIMODAL_TUNING = {"freeze_vision_tower": True, "freeze_multi_modal_projector": True, "freeze_language_model": False,
                     "train_mm_proj_only": False}
"""The multimodal tuning keys and their defaults (LlamaFactory's): other values need a multimodal model."""


@section
class ModelArguments:
    model_name_or_path: str | None = None
    """A hub id, a local directory, a `.gguf` file, or a bundled model name (`lf_models.bundled`)."""
    adapter_name_or_path: list[str] | None = None
    """Adapters to load: all but the last are merged; training continues the last one."""
    cache_dir: str | None = None
    """Where hub downloads are cached."""
    model_revision: str = "main"
    """Branch, tag or commit of a hub model."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model. Off unless you trust its author."""
    quantization_bit: int | None = None
    """Quantise the model on the fly to this many bits (bnb: 4 or 8; hqq: 1-6 or 8; eetq: 8); adapters train on top."""
    quantization_method: Literal["bnb", "hqq", "eetq", "gptq", "awq", "aqlm", "quanto", "mxfp4", "fp8"] = "bnb"
    """On-the-fly quantiser for quantization_bit: bnb (bitsandbytes), hqq or eetq; the others come with a checkpoint."""
    quantization_device_map: Literal["auto"] | None = None
    """auto: spread a 4-bit bitsandbytes model over every visible GPU (inference); default: one device."""
    quantization_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type."""
    double_quantization: bool = True
    """Also quantise the 4-bit quantisation constants (saves ~0.4 bit per weight)."""
    rope_scaling: Literal["linear", "dynamic", "yarn", "llama3"] | None = None
    """Stretch RoPE to a longer context; the factor is cutoff_len over the model's context length."""
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = "auto"
    """Attention kernel: auto (transformers' choice), disabled (eager), sdpa, or fa2 (FlashAttention 2)."""
    shift_attn: bool = False
    """S² (shifted sparse) attention while training, for long contexts (Llama-family models)."""
    upcast_layernorm: bool = False
    """Keep normalisation layers in fp32 under half precision."""
    upcast_lmhead_output: bool = False
    """Compute the output logits in fp32 under half precision."""
    new_special_tokens: list[str] | None = None
    """Special tokens to add to the tokenizer (embeddings are resized, new rows start near the mean)."""
    add_tokens: list[str] | None = None
    """Ordinary (non-special) tokens to add to the tokenizer; the embeddings grow to fit them."""
    add_special_tokens: list[str] | None = None
    """Special tokens to add to the tokenizer (LlamaFactory's key); the embeddings grow to fit them."""
    new_special_tokens_config: str | None = None
    """A YAML file mapping each new special token to a description; replaces add_special_tokens."""
    init_special_tokens: Literal["noise_init", "desc_init", "desc_init_w_noise"] = "noise_init"
    """New embedding rows: mean of all rows plus noise, or the mean of the description's tokens (plus noise)."""
    resize_vocab: bool = False
    """Resize the embeddings to the tokenizer even without new tokens."""
    train_from_scratch: bool = False
    """Start from randomly initialised weights of the model's architecture (config.json only; pre-training)."""
    moe_aux_loss_coef: Annotated[float, Range(ge=0)] | None = None
    """Mixture-of-experts models: weight of the router's load-balancing loss (also turns the loss on)."""
    pure_bf16: bool = False
    """Train in bf16 throughout: weights and trainable parameters stay bf16, no fp32 master copy."""
    image_max_pixels: Annotated[int, AtLeastOne] = 768 * 768
    """Multimodal training: images larger than this many pixels are scaled down (aspect kept)."""
    image_min_pixels: Annotated[int, AtLeastOne] = 32 * 32
    """Multimodal training: images smaller than this many pixels are scaled up."""
    image_do_pan_and_scan: bool = False
    """Gemma 3: also crop large images into pan-and-scan tiles (its processor's option)."""
    video_max_pixels: Annotated[int, AtLeastOne] = 256 * 256
    """Multimodal training: each video frame is scaled down to at most this many pixels."""
    video_min_pixels: Annotated[int, AtLeastOne] = 16 * 16
    """Multimodal training: each video frame is scaled up to at least this many pixels."""
    video_fps: Annotated[float, Positive] = 2.0
    """Frames sampled per second of video."""
    video_maxlen: Annotated[int, AtLeastOne] = 128
    """At most this many frames per video (evenly spaced over the whole video)."""
    use_audio_in_video: bool = False
    """Qwen2.5-Omni: also feed a video's sound track (LlamaFactory's key; only false, see docs/llamafactory-keys.md)."""
    audio_sampling_rate: Annotated[int, AtLeastOne] = 16000
    """Audio is resampled to this rate (Hz) before the feature extractor."""
    hf_hub_token: str | None = None
    """Hugging Face token for private models and datasets (default: HF_TOKEN or the saved login)."""
    ms_hub_token: str | None = None
    """ModelScope token (models and datasets read with USE_MODELSCOPE_HUB=1 or ms_hub_url)."""
    om_hub_token: str | None = None
    """Modelers (openMind) token (models and datasets read with USE_OPENMIND_HUB=1 or om_hub_url)."""

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("`model_name_or_path` is required: a hub id, a local model folder, a .gguf file, "
                              "or a bundled model such as smollm2-135m-instruct.")
        from lf_models.quantization import check_quantization_args

        check_quantization_args(self)
        if self.use_audio_in_video:  # declared so that lf chat/api and lf export read it too; refused with LF's note
            from lf_data.llamafactory_keys import KEYS

            raise ConfigError(f"use_audio_in_video: true is not supported by LF: {KEYS['use_audio_in_video'].note}.")
        if self.new_special_tokens_config is not None:
            from lf_models.new_tokens import read_token_descriptions

            read_token_descriptions(self.new_special_tokens_config)  # a missing or malformed file: one line now
        elif self.init_special_tokens != "noise_init":
            raise ConfigError(f"init_special_tokens: {self.init_special_tokens} starts each new token from its "
                              "description; give new_special_tokens_config (a YAML file: token -> description).")


@section
class FinetuningArguments:
    finetuning_type: Literal["lora", "oft", "freeze", "full"] = "lora"
    """`lora`: low-rank adapters; `oft`: orthogonal adapters; `freeze`: train some layers; `full`: every weight."""
    lora_rank: Annotated[int, AtLeastOne] = 8
    """Rank of the LoRA matrices."""
    lora_alpha: Annotated[int, Positive] | None = None
    """LoRA scaling numerator; defaults to twice the rank."""
    lora_dropout: Annotated[float, Fraction] = 0.0
    """Dropout on the LoRA input."""
    lora_target: list[str] | None = None
    """Module names to adapt, or `all` for every linear layer except the output head (the default)."""
    additional_target: list[str] | None = None
    """Modules trained fully and saved next to the LoRA or OFT adapter (for example embed_tokens,lm_head)."""
    use_rslora: bool = False
    """Rank-stabilised LoRA: scale by alpha / sqrt(rank) instead of alpha / rank."""
    use_dora: bool = False
    """DoRA: learn a magnitude per output feature on top of the LoRA direction update."""
    pissa_init: bool = False
    """Initialise LoRA from the principal singular vectors of each weight (PiSSA)."""
    pissa_iter: Annotated[int, Range(ge=-1, hint="-1 is an exact SVD")] = 16
    """Iterations of the fast SVD for PiSSA (-1: exact SVD)."""
    pissa_convert: bool = False
    """Save the PiSSA adapter as a plain LoRA adapter that applies to the original base model."""
    loraplus_lr_ratio: Annotated[float, Range(gt=0, hint="typically 16")] | None = None
    """LoRA+: the B matrices learn this many times faster than the A matrices."""
    loraplus_lr_embedding: Annotated[float, Positive] = 1e-6
    """LoRA+: learning rate of the LoRA matrices of embedding layers (additional_target embed_tokens with LoRA)."""
    create_new_adapter: bool = False
    """With adapter_name_or_path: merge all given adapters and train a fresh one on top (LoRA or OFT)."""
    oft_rank: Annotated[int, Range(ge=0, hint="0 lets oft_block_size decide")] = 0
    """OFT: number of orthogonal blocks per layer (0: derived from oft_block_size; set one of the two)."""
    oft_block_size: Annotated[int, Range(ge=0, hint="0 lets oft_rank decide")] = 32
    """OFT: size of each orthogonal block (0: derived from oft_rank; set one of the two)."""
    oft_target: list[str] | None = None
    """Module names OFT adapts, or `all` for every linear layer except the output head (the default)."""
    module_dropout: Annotated[float, Fraction] = 0.0
    """OFT: probability of replacing a block's rotation by the identity while training."""
    freeze_trainable_layers: int = 2
    """Freeze tuning: train the last N decoder layers (the first N with a negative number)."""
    freeze_trainable_modules: list[str] | None = None
    """Freeze tuning: module names inside the trainable layers (`all` by default)."""
    freeze_extra_modules: list[str] | None = None
    """Freeze tuning: modules outside the layers that are trained too (for example embed_tokens)."""
    use_llama_pro: bool = False
    """LLaMA Pro: train only the blocks `lf expand` added (freeze_trainable_layers is their number)."""
    freeze_vision_tower: bool = True
    """Multimodal models: keep the vision (or audio) encoder frozen; false trains it (full/freeze) or adapts it (LoRA/OFT)."""
    freeze_multi_modal_projector: bool = True
    """Multimodal models: keep the projector (encoder -> language model) frozen; false trains or adapts it."""
    freeze_language_model: bool = False
    """Multimodal models: keep the language model frozen (train only the encoder side that is not frozen)."""
    train_mm_proj_only: bool = False
    """Multimodal models, full or freeze tuning: train the projector alone (LlamaFactory 0.9.1's key)."""

    def __post_init__(self) -> None:
        if self.lora_alpha is None:
            self.lora_alpha = self.lora_rank * 2
        if not self.lora_target:
            self.lora_target = ["all"]
        if "all" in self.lora_target and len(self.lora_target) > 1:
            raise ConfigError("lora_target mixes `all` with module names; use either `all` or a list of names.")
        if not self.oft_target:
            self.oft_target = ["all"]
        if "all" in self.oft_target and len(self.oft_target) > 1:
            raise ConfigError("oft_target mixes `all` with module names; use either `all` or a list of names.")
        if self.finetuning_type == "oft" and (self.oft_rank == 0) == (self.oft_block_size == 0):
            raise ConfigError(f"oft_rank={self.oft_rank} and oft_block_size={self.oft_block_size}: set exactly one "
                              "of them (their product is the layer width), for example oft_block_size: 32 and "
                              "oft_rank: 0.")
        if not self.freeze_trainable_modules:
            self.freeze_trainable_modules = ["all"]
        if self.freeze_trainable_layers == 0:
            raise ConfigError("freeze_trainable_layers=0 trains nothing; give the number of layers to train "
                              "(negative counts from the first layer).")
        if self.pissa_convert and not self.pissa_init:
            raise ConfigError("pissa_convert needs pissa_init: true.")
        if self.use_llama_pro and self.finetuning_type == "full":
            raise ConfigError("use_llama_pro trains only the expanded blocks; use finetuning_type: freeze (or lora, "
                              "oft), not full.")
        if self.use_llama_pro and self.freeze_trainable_layers < 0:
            raise ConfigError(f"freeze_trainable_layers={self.freeze_trainable_layers}: with use_llama_pro it is the "
                              "number of blocks `lf expand` added (num_expand), a positive number.")
        if self.create_new_adapter and self.finetuning_type not in ADAPTER_TYPES:
            raise ConfigError(f"create_new_adapter needs finetuning_type: lora or oft (it is {self.finetuning_type}).")
        if self.train_mm_proj_only:
            if self.finetuning_type not in ("full", "freeze"):
                raise ConfigError(f"train_mm_proj_only trains the projector's own weights: use finetuning_type: full "
                                  f"(it is {self.finetuning_type}). With an adapter, freeze_language_model: true and "
                                  "freeze_multi_modal_projector: false adapt the projector alone.")
            if not self.freeze_vision_tower:
                raise ConfigError("train_mm_proj_only trains the projector alone, but freeze_vision_tower is false; "
                                  "drop one of the two.")
            self.freeze_multi_modal_projector, self.freeze_language_model = False, True
        if self.freeze_vision_tower and self.freeze_multi_modal_projector and self.freeze_language_model:
            raise ConfigError("freeze_language_model: true with freeze_vision_tower and freeze_multi_modal_projector "
                              "true leaves nothing to train; set freeze_multi_modal_projector: false (or "
                              "freeze_vision_tower: false) to train the encoder side.")
        if self.finetuning_type != "lora":
            used = [k for k in ("use_dora", "use_rslora", "pissa_init") if getattr(self, k)]
            if used or self.loraplus_lr_ratio is not None:
                raise ConfigError(f"{', '.join(used) or 'loraplus_lr_ratio'} needs finetuning_type: lora "
                                  f"(it is {self.finetuning_type}).")


def check_model_combination(model_args: ModelArguments, finetuning_args: FinetuningArguments) -> None:
    """Refuse combinations that cannot work, before any weight is loaded."""
    if model_args.train_from_scratch and (model_args.quantization_bit is not None or model_args.adapter_name_or_path):
        raise ConfigError("train_from_scratch starts from random weights: it cannot be quantised or carry adapters; "
                          "remove quantization_bit / adapter_name_or_path.")
    if model_args.quantization_bit is not None:
        if finetuning_args.finetuning_type not in ADAPTER_TYPES:
            raise ConfigError(f"a quantised model trains only through adapters: finetuning_type "
                              f"{finetuning_args.finetuning_type} would update quantised weights, which "
                              "bitsandbytes cannot do. Use finetuning_type: lora (QLoRA) or oft (QOFT), or drop "
                              "quantization_bit.")
        if finetuning_args.pissa_init:
            raise ConfigError("pissa_init decomposes full-precision weights; it cannot start from a quantised "
                              "model. Drop quantization_bit or pissa_init.")
    if finetuning_args.create_new_adapter and not model_args.adapter_name_or_path:
        raise ConfigError("create_new_adapter needs adapter_name_or_path (the adapters to merge first).")
    if model_args.adapter_name_or_path and finetuning_args.finetuning_type not in ADAPTER_TYPES:
        raise ConfigError("adapter_name_or_path needs finetuning_type: lora or oft (the adapter's own type).")
    from lf_models.families import reference_family

    changed = [key for key, default in MULTIMODAL_TUNING.items() if getattr(finetuning_args, key) != default]
    if changed and model_args.model_name_or_path:  # config.json only: a text model is refused before loading
        kind, family = reference_family(model_args.model_name_or_path)
        if kind is not None:
            check_multimodal_tuning(kind, family, finetuning_args, model_args.model_name_or_path)


def check_multimodal_tuning(kind: str | None, family: Any, finetuning_args: FinetuningArguments,
                            reference: str) -> None:
    """The multimodal tuning keys away from their defaults need a multimodal family whose towers LF knows:
    on a text model they would change nothing, silently."""
    changed = [key for key, default in MULTIMODAL_TUNING.items() if getattr(finetuning_args, key) != default]
    if not changed:
        return
    if finetuning_args.train_mm_proj_only:  # it set the other two
        changed = ["train_mm_proj_only"]
    what = ", ".join(f"{key}: {str(getattr(finetuning_args, key)).lower()}" for key in changed)
    if family is None or not family.vlm:
        raise ConfigError(f"{what} applies to multimodal models, but {reference!r} (model_type {kind}) is a text "
                          "model; remove the key(s).")
    if not family.towers:
        raise ConfigError(f"{what}: LF does not know where the vision tower, projector and language model of "
                          f"model_type {kind} are (its family has no towers); remove the key(s).")
