"""Model families LF knows: one registry, keyed by `config.model_type`.

A family says which chat template its instruct models use, which modules `lora_target: all`
adapts, where its decoder layers live (for freeze tuning), whether it is a vision-language model
(loaded through the image-text-to-text auto class with its processor), and its known quirks.

Every family below is a decoder-only architecture that transformers ships natively (no
`trust_remote_code`); `tests/lf_models/test_families.py` builds a tiny random model of each one,
loads it through `load_model(lora_target=["all"])` and checks that every adapter trains.

`lora_targets` is only set where "every linear layer except the head" is wrong:
- MoE routers that are `nn.Linear` (`router`, `wg`, `shared_expert_gate`) pick experts; adapting them
  perturbs routing and load balance, so they stay frozen.
- In a VLM the vision tower and projector stay frozen and un-adapted (as LlamaFactory does by
  default); the list names the language model's layers only.
In transformers 5 the routed experts of most MoE families are fused 3-D parameters, not linear
layers, so `lora_target: all` reaches attention (and shared experts) only -- except where peft's
v4-to-v5 adapter conversion maps the MLP names onto the fused experts (`PEFT_FUSED_EXPERTS`).
Both are recorded as quirks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lf_data.errors import ConfigError


@dataclass(frozen=True)
class ModelFamily:
    model_type: str
    architectures: tuple[str, ...] = ()
    template: str | None = None
    """lf-data template name of the family's instruct/chat models."""
    lora_targets: tuple[str, ...] = ()
    """Module names `lora_target: all` adapts; empty = every linear layer except the head."""
    layers: str = "model.layers"
    """Dotted path of the decoder layer list (freeze tuning counts these)."""
    markers: Mapping[str, str] = field(default_factory=dict)
    """Multimodal models: per media kind (images, videos, audios), the prompt text of one item -- the
    model's own special tokens, which its processor expands into the item's features (`lf_models.media`)."""
    towers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Multimodal models: the dotted module paths of `vision_tower`, `projector` and `language_model`
    (freeze_vision_tower, freeze_multi_modal_projector, freeze_language_model, train_mm_proj_only)."""
    quirks: tuple[str, ...] = field(default_factory=tuple)
    packing: str = "neat"
    """Multimodal models: the most packing rows with media allow -- "neat" (examples kept apart: positions
    restart and a block-diagonal mask, so a packed example gives the logits it gives alone), "plain"
    (packed examples see each other) or "none"; `packing_reason` says why it is less than neat."""
    packing_reason: str = ""
    rope_index: bool = False
    """M-RoPE models: a neat-packed row's positions come from the model's own get_rope_index, example by
    example (lf_train.collators.MediaCollator)."""

    @property
    def media(self) -> tuple[str, ...]:
        """The media columns of lf-data its models take (none for a text model)."""
        return tuple(self.markers)

    @property
    def vlm(self) -> bool:
        """Loaded through its own multimodal class with its processor (vision or audio)."""
        return bool(self.markers)


FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    if family.model_type in FAMILIES:
        raise ValueError(f"family {family.model_type!r} is registered twice")
    FAMILIES[family.model_type] = family
    return family


def family_for(config: Any) -> ModelFamily | None:
    return FAMILIES.get(getattr(config, "model_type", None))


def model_class_for(config: Any) -> Any:
    """The transformers auto class that loads this config: image-text-to-text for VLMs."""
    import transformers

    family = family_for(config)
    if family is not None and family.vlm:
        if type(config) in transformers.AutoModelForImageTextToText._model_mapping:
            return transformers.AutoModelForImageTextToText
        named = getattr(transformers, family.architectures[0], None) if family.architectures else None
        return named or transformers.AutoModelForImageTextToText  # audio models: their own class
    return transformers.AutoModelForCausalLM


_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_FUSED_EXPERTS = "routed experts are fused 3-D parameters: lora_target all adapts attention only"
_FUSED_EXPERTS_SHARED = "routed experts are fused 3-D parameters: lora_target all adapts attention and shared experts"
_NO_ROUTER = "the linear MoE router is kept out of lora_target all"
PEFT_FUSED_EXPERTS = ("peft re-targets gate_proj/up_proj/down_proj onto the fused routed experts (its v4-adapter "
                      "conversion): routed experts get LoRA, the shared-expert and dense-layer MLPs get none")
"""Quirk of the families whose MLP names peft rewrites into `target_parameters` on transformers 5."""
_TRANSFORMER_H = "transformer.h"


def _family(model_type: str, architecture: str, template: str | None, *quirks: str,
            lora_targets: tuple[str, ...] = (), layers: str = "model.layers",
            markers: Mapping[str, str] | None = None, towers: Mapping[str, tuple[str, ...]] | None = None,
            packing: tuple[str, str] = ("neat", ""), rope_index: bool = False) -> None:
    register(ModelFamily(model_type, (architecture,), template=template, lora_targets=lora_targets,
                         layers=layers, markers=markers or {}, towers=towers or {}, quirks=quirks,
                         packing=packing[0], packing_reason=packing[1], rope_index=rope_index))


# -- Llama and its close relatives (q/k/v/o + gate/up/down) -----------------------------------------
_family("llama", "LlamaForCausalLM", "llama3", "Llama 2 chat models use the llama2 template")
_family("mistral", "MistralForCausalLM", "mistral", "Mistral Small 3 models use mistral_small")
_family("ministral", "MinistralForCausalLM", "ministral")
_family("ministral3", "Ministral3ForCausalLM", "mistral_small",
        "text decoder of Ministral 3; the released checkpoints are mistral3 vision-language models")
_family("qwen2", "Qwen2ForCausalLM", "qwen", "QwQ and Qwen2.5 share it; attention q/k/v carry biases")
_family("qwen3", "Qwen3ForCausalLM", "qwen3", "hybrid thinking; Instruct-2507 models use qwen3_nothink")
_family("gemma", "GemmaForCausalLM", "gemma", "embeddings are scaled by sqrt(hidden_size)")
_family("gemma2", "Gemma2ForCausalLM", "gemma2", "logit soft-capping; sliding-window layers; prefers eager attention")
_family("gemma3_text", "Gemma3ForCausalLM", "gemma3", "text-only Gemma 3 (1B); larger sizes are the gemma3 VLM")
_family("olmo", "OlmoForCausalLM", "olmo")
_family("olmo2", "Olmo2ForCausalLM", "olmo", "Tulu-style <|user|>/<|assistant|> turns; q/k norms")
_family("olmo3", "Olmo3ForCausalLM", "chatml", "instruct models use ChatML turns with their own default system")
_family("cohere", "CohereForCausalLM", "cohere", "Command R; logit scaling; tied embeddings")
_family("cohere2", "Cohere2ForCausalLM", "cohere", "Command R7B; sliding-window layers")
_family("granite", "GraniteForCausalLM", "granite3", "embedding, residual and logit multipliers")
_family("stablelm", "StableLmForCausalLM", None, "partial rotary; chat variants differ (zephyr, chatml)")
_family("exaone4", "Exaone4ForCausalLM", None,
        "EXAONE 4 turns differ from EXAONE 3's `exaone` template (reasoning, [|endofturn|] after users)")
_family("internlm3", "LlamaForCausalLM", "intern3", "loads through the Llama implementation")
_family("ernie4_5", "Ernie4_5ForCausalLM", None, "no ERNIE 4.5 template in lf-data yet")
_family("hunyuan_v1_dense", "HunYuanDenseV1ForCausalLM", "hunyuan", "q/k norms")
_family("seed_oss", "SeedOssForCausalLM", None, "no Seed-OSS template in lf-data yet")
_family("smollm3", "SmolLM3ForCausalLM", "chatml", "NoPE every 4th layer; reasoning toggled by /think and /no_think")
_family("helium", "HeliumForCausalLM", None, "base models only")
_family("apertus", "ApertusForCausalLM", None, "xIELU MLP without a gate (up/down only); own chat format")
_family("arcee", "ArceeForCausalLM", None, "ReLU^2 MLP without a gate (up/down only)")
_family("nemotron", "NemotronForCausalLM", None, "squared-ReLU MLP without a gate; partial rotary")
_family("glm", "GlmForCausalLM", "glm4", "GLM-4-9B-chat in transformers format; fused gate_up_proj")
_family("glm4", "Glm4ForCausalLM", "glm4", "fused gate_up_proj; extra post-norms")
_family("lfm2", "Lfm2ForCausalLM", "chatml", "hybrid short convolutions and attention; chat turns are ChatML")

# -- fused or differently named projections ---------------------------------------------------------
_family("phi", "PhiForCausalLM", None, "Phi-1.5 and Phi-2 are base models; dense/fc1/fc2 names; partial rotary")
_family("phi3", "Phi3ForCausalLM", "phi", "fused qkv_proj and gate_up_proj; Phi-4 uses phi4, Phi-4-mini phi4_mini")
_family("starcoder2", "Starcoder2ForCausalLM", None, "code base models; c_fc/c_proj MLP")
_family("falcon", "FalconForCausalLM", "falcon", "fused query_key_value; parallel attention and MLP",
        layers=_TRANSFORMER_H)
_family("gpt_neox", "GPTNeoXForCausalLM", None, "Pythia; fused query_key_value", layers="gpt_neox.layers")
_family("gpt2", "GPT2LMHeadModel", None, "Conv1D layers (weights stored transposed)", layers=_TRANSFORMER_H)
_family("gptj", "GPTJForCausalLM", None, "parallel attention and MLP; partial rotary", layers=_TRANSFORMER_H)
_family("gpt_neo", "GPTNeoForCausalLM", None, "alternating global and local attention", layers=_TRANSFORMER_H)
_family("gpt_bigcode", "GPTBigCodeForCausalLM", "starchat", "StarCoder; multi-query fused c_attn",
        layers=_TRANSFORMER_H)
_family("codegen", "CodeGenForCausalLM", None, "fused qkv_proj; partial rotary", layers=_TRANSFORMER_H)
_family("bloom", "BloomForCausalLM", None, "ALiBi positions; fused query_key_value", layers=_TRANSFORMER_H)
_family("opt", "OPTForCausalLM", None, "learned positions offset by 2", layers="model.decoder.layers")
_family("mpt", "MptForCausalLM", "chatml", "ALiBi positions; fused Wqkv; MPT-7B-Chat uses ChatML",
        layers="transformer.blocks")
_family("deepseek_v2", "DeepseekV2ForCausalLM", "deepseek", "multi-head latent attention (q_a/q_b/kv_a/kv_b)",
        PEFT_FUSED_EXPERTS)
_family("deepseek_v3", "DeepseekV3ForCausalLM", "deepseek3", "multi-head latent attention (q_a/q_b/kv_a/kv_b)",
        PEFT_FUSED_EXPERTS, "R1 models use deepseekr1")
_family("minicpm3", "MiniCPM3ForCausalLM", "cpm3", "multi-head latent attention; scaled embeddings and residuals")

# -- mixture of experts -----------------------------------------------------------------------------
_family("mixtral", "MixtralForCausalLM", "mixtral", _FUSED_EXPERTS)
_family("qwen2_moe", "Qwen2MoeForCausalLM", "qwen", _FUSED_EXPERTS_SHARED,
        "the shared-expert gate (hidden -> 1) is kept out of lora_target all", lora_targets=_LLAMA_LIKE)
_family("qwen3_moe", "Qwen3MoeForCausalLM", "qwen3", _FUSED_EXPERTS)
_family("qwen3_next", "Qwen3NextForCausalLM", "qwen3_nothink",
        "hybrid gated DeltaNet linear attention (torch fallback on CPU) and gated attention", PEFT_FUSED_EXPERTS,
        "the shared-expert gate is kept out of lora_target all",
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkvz", "in_proj_ba", "out_proj",
                      "gate_proj", "up_proj", "down_proj"))
_family("olmoe", "OlmoeForCausalLM", "olmo", _FUSED_EXPERTS)
_family("phimoe", "PhimoeForCausalLM", "phi", _FUSED_EXPERTS, _NO_ROUTER, lora_targets=_ATTENTION)
_family("granitemoe", "GraniteMoeForCausalLM", "granite3", _FUSED_EXPERTS)
_family("glm4_moe", "Glm4MoeForCausalLM", "glm4_moe", PEFT_FUSED_EXPERTS, "first layers are dense")
_family("ernie4_5_moe", "Ernie4_5_MoeForCausalLM", None, PEFT_FUSED_EXPERTS, "no ERNIE 4.5 template in lf-data yet")
_family("hunyuan_v1_moe", "HunYuanMoEV1ForCausalLM", "hunyuan", PEFT_FUSED_EXPERTS, _NO_ROUTER + " (wg)",
        lora_targets=_LLAMA_LIKE)
_family("llama4_text", "Llama4ForCausalLM", "llama4", _FUSED_EXPERTS_SHARED, _NO_ROUTER,
        "text decoder of Llama 4; released checkpoints are llama4 VLMs", lora_targets=_LLAMA_LIKE)
_family("gpt_oss", "GptOssForCausalLM", "gpt_oss", _FUSED_EXPERTS, "attention sinks; MXFP4 checkpoints de-quantise")
_family("dbrx", "DbrxForCausalLM", "dbrx", _FUSED_EXPERTS, "fused Wqkv with qkv clipping",
        layers="transformer.blocks")

# -- vision-language models -------------------------------------------------------------------------
# `markers`: what lf-data's <image>/<video>/<audio> placeholder becomes in the prompt; the processor
# expands each marker into the item's feature tokens at batch time (lf_models.media).
_QWEN_VL_MARKERS = {"images": "<|vision_start|><|image_pad|><|vision_end|>",
                    "videos": "<|vision_start|><|video_pad|><|vision_end|>"}
_QWEN_VL_TOWERS = {"vision_tower": ("model.visual",), "projector": ("model.visual.merger",),
                   "language_model": ("model.language_model", "lm_head")}
_family("qwen2_vl", "Qwen2VLForConditionalGeneration", "qwen2_vl",
        "vision tower and merger stay frozen and un-adapted",
        "M-RoPE: the forward needs mm_token_type_ids (1 on <|image_pad|> tokens) with image_grid_thw",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers", markers=_QWEN_VL_MARKERS,
        towers=_QWEN_VL_TOWERS, rope_index=True)

# -- multimodal A: Qwen2.5-VL, Qwen3-VL, LLaVA-1.5, LLaVA-NeXT, LLaVA-NeXT-Video --------------------
# Qwen2.5-VL's vision MLP and LLaVA's CLIP attention reuse the decoder's module names (gate/up/down_proj,
# q/k/v_proj): `lora_target: all` picks modules by tower (lf_models.adapters.tower_targets), not by name.
_family("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "qwen2_vl",
        "vision tower (window attention, gated MLP) and merger stay frozen and un-adapted",
        "M-RoPE: the forward needs mm_token_type_ids with the grids; videos add second_per_grid_ts (absolute time)",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers", markers=_QWEN_VL_MARKERS,
        towers=_QWEN_VL_TOWERS, rope_index=True)
_family("qwen3_vl", "Qwen3VLForConditionalGeneration", "qwen3_vl_nothink",
        "Instruct models use qwen3_vl_nothink, Thinking models qwen3_vl",
        "a video's marker is <|video_pad|> alone: the processor writes `<t seconds><|vision_start|>...<|vision_end|>` "
        "per 2 frames, t from the frames' times in the source (video_metadata)",
        "vision tower, merger and DeepStack mergers stay frozen and un-adapted",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers",
        markers={"images": _QWEN_VL_MARKERS["images"], "videos": "<|video_pad|>"},
        towers={**_QWEN_VL_TOWERS, "projector": ("model.visual.merger", "model.visual.deepstack_merger_list")},
        rope_index=True)
_LLAVA_TOWERS = {"vision_tower": ("model.vision_tower",), "projector": ("model.multi_modal_projector",),
                 "language_model": ("model.language_model", "lm_head")}
_family("llava", "LlavaForConditionalGeneration", "llava",
        "CLIP vision tower and projector stay frozen and un-adapted; one image is a fixed number of <image> tokens",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers", markers={"images": "<image>"},
        towers=_LLAVA_TOWERS)
_LLAVA_NEXT_TILES = ("AnyRes: an image is a base view plus tiles (image_grid_pinpoints); a batch zero-pads the tile "
                     "count and the model keeps each image's real tiles (image_sizes)")
_NEWLINE = "image_newline is a bare parameter outside the towers: only full tuning trains it"
_family("llava_next", "LlavaNextForConditionalGeneration", "llava_next", _LLAVA_NEXT_TILES, _NEWLINE,
        "Mistral, Llama 3, Yi and Qwen based models use llava_next_mistral, _llama3, _yi, _qwen",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers", markers={"images": "<image>"},
        towers=_LLAVA_TOWERS)
_family("llava_next_video", "LlavaNextVideoForConditionalGeneration", "llava_next_video", _LLAVA_NEXT_TILES, _NEWLINE,
        "video frames are encoded one by one and pooled (spatial_pool_stride); videos of different lengths in "
        "a batch are joined along the frame axis", "Mistral and Yi based models use llava_next_video_mistral, _yi",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers",
        markers={"images": "<image>", "videos": "<video>"}, towers=_LLAVA_TOWERS)

# -- multimodal B: Gemma 3, PaliGemma, Idefics3/SmolVLM, InternVL, Mistral 3/Pixtral, Llama 3.2 Vision
# Each marker is the token the family's processor replaces by one image's sequence; the SigLIP, InternViT
# and Pixtral encoders reuse the decoder's q/k/v_proj (Pixtral's also gate/up/down_proj), so `lora_target:
# all` keeps off them by tower (lf_models.adapters.tower_targets).
_FROZEN_ENCODER = "vision tower and projector stay frozen and un-adapted"
_family("gemma3", "Gemma3ForConditionalGeneration", "gemma3", _FROZEN_ENCODER,
        "the processor writes <start_of_image> as a blank line, <start_of_image>, mm_tokens_per_image "
        "<image_soft_token>s, <end_of_image> and a blank line",
        "token_type_ids (1 on <image_soft_token>) let an image's tokens attend to each other both ways",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers",
        markers={"images": "<start_of_image>"}, towers=_LLAVA_TOWERS,
        packing=("plain", "an image's tokens attend both ways through the model's own mask, which a neat-packed "
                          "row's block-diagonal mask would make causal"))
_family("paligemma", "PaliGemmaForConditionalGeneration", "paligemma", _FROZEN_ENCODER,
        "every image's <image> tokens go before bos wherever the placeholder stood (lf_models.media), as its "
        "processor lays them out; the prefix (images and prompt) attends both ways, the answer causally "
        "(token_type_ids 0 and 1)", "mix and chat checkpoints use paligemma_chat",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers",
        markers={"images": "<image>"}, towers=_LLAVA_TOWERS,
        packing=("none", "every image of a row goes before bos under one prefix mask: packed examples would "
                         "share their images and prompts"))
_IDEFICS3_TOWERS = {"vision_tower": ("model.vision_model",), "projector": ("model.connector",),
                    "language_model": ("model.text_model", "lm_head")}
_IDEFICS3_PROMPT = ("no LlamaFactory template: LF's idefics3/smolvlm templates write the User:/Assistant: turns "
                    "with <end_of_utterance> that its own chat template writes for list contents")
_family("idefics3", "Idefics3ForConditionalGeneration", "idefics3", _FROZEN_ENCODER, _IDEFICS3_PROMPT,
        "large images are split into a grid of crops plus a global view: <fake_token_around_image><row_i_col_j> "
        "<image>... per crop; a batch zero-pads the crop count and the model drops the padding crops",
        lora_targets=_LLAMA_LIKE, layers="model.text_model.layers",
        markers={"images": "<image>"}, towers=_IDEFICS3_TOWERS)
_family("smolvlm", "SmolVLMForConditionalGeneration", "smolvlm", _FROZEN_ENCODER, _IDEFICS3_PROMPT,
        "Idefics3's image layout; its processor needs the num2words package; videos are not wired yet",
        lora_targets=_LLAMA_LIKE, layers="model.text_model.layers",
        markers={"images": "<image>"}, towers=_IDEFICS3_TOWERS)
_family("internvl", "InternVLForConditionalGeneration", "intern_vl", _FROZEN_ENCODER,
        "the processor writes <IMG_CONTEXT> as <img>, image_seq_length <IMG_CONTEXT>s per tile "
        "(crop_to_patches: tiles plus a thumbnail), </img>", "InternVL 3 '-hf' checkpoints (native transformers)",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers",
        markers={"images": "<IMG_CONTEXT>"}, towers=_LLAVA_TOWERS)
_family("mistral3", "Mistral3ForConditionalGeneration", "mistral_small", _FROZEN_ENCODER,
        "Pixtral vision tower: an image is rows of [IMG] closed by [IMG_BREAK], the last by [IMG_END]; a batch "
        "zero-pads the pixels and image_sizes says what is real", "Ministral 3 models use ministral3",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers",
        markers={"images": "[IMG]"}, towers=_LLAVA_TOWERS)
_family("mllama", "MllamaForConditionalGeneration", "mllama", _FROZEN_ENCODER,
        "one <|image|> token an image; the text sees the image's tiles through cross-attention layers "
        "(cross_attention_mask from its token on, built per sequence by lf_models.media), whose q/k/v/o_proj "
        "lora_target all adapts too", "neat packing is not possible (cross_attention_mask per row)",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers", markers={"images": "<|image|>"},
        towers={"vision_tower": ("model.vision_model",), "projector": ("model.multi_modal_projector",),
                "language_model": ("model.language_model", "lm_head")},
        packing=("plain", "the cross_attention_mask lets a token see the last image before it, which in a "
                          "neat-packed row may be another example's"))

# -- multimodal C: audio (Qwen2-Audio, Qwen2.5-Omni thinker) -----------------------------------------
# One clip is `<|audio_bos|><|AUDIO|><|audio_eos|>`; the processor repeats <|AUDIO|> once per encoder output
# frame of the clip (~25 a second; the Whisper features are padded to 30 s). Qwen2-Audio is not in the
# image-text-to-text auto class: it loads through its architecture class (model_class_for). The audio
# encoders' attention uses the decoder's q_proj/k_proj/v_proj names: `towers` keeps lora_target: all off them.
_AUDIO_MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
_family("qwen2_audio", "Qwen2AudioForConditionalGeneration", "qwen2_audio",
        "Whisper-style audio encoder and projector stay frozen; clips are padded to 30 s of features "
        "(longer clips are cut at 30 s)",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers", markers={"audios": _AUDIO_MARKER},
        towers={"vision_tower": ("model.audio_tower",), "projector": ("model.multi_modal_projector",),
                "language_model": ("model.language_model", "lm_head")})
_family("qwen2_5_omni_thinker", "Qwen2_5OmniThinkerForConditionalGeneration", "qwen2_omni",
        "the thinker (text output) of Qwen2.5-Omni; the released qwen2_5_omni checkpoints also hold the talker",
        "vision tower, audio encoder and their projectors stay frozen; M-RoPE positions from the grids and "
        "the clips' feature lengths",
        lora_targets=_LLAMA_LIKE, layers="model.language_model.layers",
        markers={"images": "<|vision_bos|><|IMAGE|><|vision_eos|>",
                 "videos": "<|vision_bos|><|VIDEO|><|vision_eos|>", "audios": _AUDIO_MARKER},
        towers={"vision_tower": ("model.visual", "model.audio_tower"),
                "projector": ("model.visual.merger", "model.audio_tower.proj"),
                "language_model": ("model.language_model", "lm_head")},
        packing=("plain", "per-example M-RoPE positions would need each clip's feature length (not wired yet)"))


def reference_family(reference: str) -> tuple[str | None, ModelFamily | None]:
    """(model_type, family) of a model reference from its config.json or GGUF header, nothing loaded;
    (None, None) when unknown (a hub model not in the local cache, a tokenizer-only folder)."""
    from lf_models.bundled import BUNDLED_MODELS
    from lf_models.default_template import model_type

    if reference in BUNDLED_MODELS:
        try:
            reference = str(BUNDLED_MODELS[reference].path())
        except ConfigError:  # not installed: the loader says so later
            return None, None
    kind = model_type(reference)
    return kind, FAMILIES.get(kind or "")


def is_vlm(reference: str) -> bool | None:
    """Whether LF loads `reference` as a vision-language model (None: its config is not at hand)."""
    kind, family = reference_family(reference)
    if kind is None:
        return None
    return family is not None and family.vlm


def check_media_support(reference: str | None, has_media: bool | Mapping[str, Iterable[str]]) -> None:
    """Refuse data with images, videos or audios for a model that cannot take them: it would train on
    the literal `<image>` text. Reads config.json only, so `lf train` can call it before loading.

    `has_media`: True, or {dataset name: its media columns} (`lf_data.dataset_info.media_kinds`).
    A model whose config is not at hand (an uncached hub id) passes: the loader finds out later.
    """
    if not reference or not has_media:
        return
    kind, family = reference_family(reference)
    if kind is None:
        return
    wanted = {name: list(kinds) for name, kinds in has_media.items()} if isinstance(has_media, Mapping) \
        else {"the data": ["images"]}
    accepted = family.media if family is not None else ()
    for name, kinds in wanted.items():
        refused = [k for k in kinds if k not in accepted]
        if not refused:
            continue
        where = f"dataset {name!r}" if isinstance(has_media, Mapping) else name
        vlms = ", ".join(sorted(t for t, f in FAMILIES.items() if f.vlm))
        what = "a text model" if not accepted else f"a multimodal model that takes {' and '.join(accepted)} only"
        raise ConfigError(f"{where} has {' and '.join(refused)} but model {reference!r} (model_type {kind}) is {what}: "
                          f"it would train on the placeholder text. Use a model LF feeds media to (families: {vlms}) "
                          f"or remove the {', '.join(refused)} column(s) from the dataset's entry in dataset_info.json.")
