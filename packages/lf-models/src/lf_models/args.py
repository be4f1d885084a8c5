"""The model and fine-tuning parts of the configuration (LlamaFactory-compatible key names)."""

from __future__ import annotations

from typing import Annotated, Literal

from lf_data.config import AtLeastOne, Fraction, Positive, Range, section
from lf_data.errors import ConfigError


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
    """Quantise the model on the fly with bitsandbytes: 4 or 8 (adapters train on top; QLoRA)."""
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
    resize_vocab: bool = False
    """Resize the embeddings to the tokenizer even without new tokens."""
    pure_bf16: bool = False
    """Train in bf16 throughout: weights and trainable parameters stay bf16, no fp32 master copy."""

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("`model_name_or_path` is required: a hub id, a local model folder, a .gguf file, "
                              "or a bundled model such as smollm2-135m-instruct.")
        if self.quantization_bit not in (None, 4, 8):
            raise ConfigError(f"quantization_bit={self.quantization_bit}: bitsandbytes quantises to 4 or 8 bits.")


@section
class FinetuningArguments:
    finetuning_type: Literal["lora", "freeze", "full"] = "lora"
    """`lora`: low-rank adapters on a frozen model; `freeze`: train some layers; `full`: train every weight."""
    lora_rank: Annotated[int, AtLeastOne] = 8
    """Rank of the LoRA matrices."""
    lora_alpha: Annotated[int, Positive] | None = None
    """LoRA scaling numerator; defaults to twice the rank."""
    lora_dropout: Annotated[float, Fraction] = 0.0
    """Dropout on the LoRA input."""
    lora_target: list[str] | None = None
    """Module names to adapt, or `all` for every linear layer except the output head (the default)."""
    additional_target: list[str] | None = None
    """Modules trained fully and saved next to the adapter (for example embed_tokens,lm_head)."""
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
    create_new_adapter: bool = False
    """With adapter_name_or_path: merge all given adapters and train a fresh one on top."""
    freeze_trainable_layers: int = 2
    """Freeze tuning: train the last N decoder layers (the first N with a negative number)."""
    freeze_trainable_modules: list[str] | None = None
    """Freeze tuning: module names inside the trainable layers (`all` by default)."""
    freeze_extra_modules: list[str] | None = None
    """Freeze tuning: modules outside the layers that are trained too (for example embed_tokens)."""

    def __post_init__(self) -> None:
        if self.lora_alpha is None:
            self.lora_alpha = self.lora_rank * 2
        if not self.lora_target:
            self.lora_target = ["all"]
        if "all" in self.lora_target and len(self.lora_target) > 1:
            raise ConfigError("lora_target mixes `all` with module names; use either `all` or a list of names.")
        if not self.freeze_trainable_modules:
            self.freeze_trainable_modules = ["all"]
        if self.freeze_trainable_layers == 0:
            raise ConfigError("freeze_trainable_layers=0 trains nothing; give the number of layers to train "
                              "(negative counts from the first layer).")
        if self.pissa_convert and not self.pissa_init:
            raise ConfigError("pissa_convert needs pissa_init: true.")
        if self.finetuning_type != "lora":
            used = [k for k in ("use_dora", "use_rslora", "pissa_init", "create_new_adapter") if getattr(self, k)]
            if used or self.loraplus_lr_ratio is not None:
                raise ConfigError(f"{', '.join(used) or 'loraplus_lr_ratio'} needs finetuning_type: lora "
                                  f"(it is {self.finetuning_type}).")


def check_model_combination(model_args: ModelArguments, finetuning_args: FinetuningArguments) -> None:
    """Refuse combinations that cannot work, before any weight is loaded."""
    if model_args.quantization_bit is not None:
        if finetuning_args.finetuning_type != "lora":
            raise ConfigError(f"a quantised model trains only through adapters: finetuning_type "
                              f"{finetuning_args.finetuning_type} would update quantised weights, which "
                              "bitsandbytes cannot do. Use finetuning_type: lora (QLoRA) or drop quantization_bit.")
        if finetuning_args.pissa_init:
            raise ConfigError("pissa_init decomposes full-precision weights; it cannot start from a quantised "
                              "model. Drop quantization_bit or pissa_init.")
    if finetuning_args.create_new_adapter and not model_args.adapter_name_or_path:
        raise ConfigError("create_new_adapter needs adapter_name_or_path (the adapters to merge first).")
    if model_args.adapter_name_or_path and finetuning_args.finetuning_type != "lora":
        raise ConfigError("adapter_name_or_path needs finetuning_type: lora.")
