"""Every configuration key of LlamaFactory 0.9.5, and what LF does with it.

LF promises that a LlamaFactory recipe runs unchanged. Most of LlamaFactory's keys are LF keys of
the same name and meaning (declared in LF's own sections). This table holds every one of its keys,
so that the keys LF does not read itself still get an answer instead of "unknown key":

- `ignored`: accepted with any value; it changes nothing in LF, and `note` says why (LF already
  behaves that way, or the key belongs to a backend LF does not use).
- `default_only`: accepted at LlamaFactory's default (or an empty value); another value is refused
  with `note`, which names the hardware, package or alternative it needs.
- `renamed`: the value is passed to the LF key `lf_key` (a Hugging Face or LF key that does the same).

A key of a LlamaFactory argument group that an LF command does not read (the export keys in
`lf train`, the generation keys in `lf export`) is accepted and ignored where LlamaFactory's own
command accepts it (`COMMAND_GROUPS`), as LlamaFactory does. `docs/llamafactory-keys.md` lists the
whole table (written by `tools/key_table.py`; a test keeps it current).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, Literal

from lf_data.errors import ConfigError

logger = logging.getLogger(__name__)
Group = Literal["model", "data", "finetuning", "generating", "training", "eval"]
Kind = Literal["lf", "ignored", "default_only", "renamed"]

# The argument groups each LlamaFactory command parses (its `get_*_args`): a recipe for that command
# may hold any key of these groups.
COMMAND_GROUPS: dict[str, frozenset[str]] = {
    "train": frozenset({"model", "data", "finetuning", "generating", "training"}),
    "chat": frozenset({"model", "data", "finetuning", "generating"}),
    "api": frozenset({"model", "data", "finetuning", "generating"}),
    "export": frozenset({"model", "data", "finetuning", "generating"}),
    "eval": frozenset({"model", "data", "finetuning", "eval"}),
}


@dataclasses.dataclass(frozen=True)
class LlamaFactoryKey:
    group: Group
    default: Any
    kind: Kind = "lf"
    note: str = ""
    lf_key: str | None = None
    inverted: bool = False
    """renamed: the LF key means the opposite (true there is false here)."""
    entry: str | None = None
    """renamed: the value becomes this entry of the LF key's mapping (fsdp_config's transformer_layer_cls_to_wrap)."""


def _key(group: Group, default: Any, kind: Kind = "lf", note: str = "", lf_key: str | None = None,
         inverted: bool = False, entry: str | None = None) -> LlamaFactoryKey:
    return LlamaFactoryKey(group, default, kind, note, lf_key, inverted, entry)


_AUDIO_IN_VIDEO = ("interleaving a video's sound track with its frames (Qwen2.5-Omni) is not in LF; give the sound "
                   "as its own item (an `audios` column with an <audio> placeholder)")
_CROP_TO_PATCHES = ("InternVL's extra tiling of each image into patches is not offered; LF hands each image, sized "
                    "within image_max_pixels/image_min_pixels, to the model's own processor with its saved settings")
_SGLANG = "read only by infer_backend: sglang, which LF does not offer; use infer_backend: vllm or huggingface"
_KT = "KTransformers (use_kt) runs MoE experts on CPU kernels of the ktransformers package; LF does not offer it"
_MEGATRON = ("Megatron-Core training (mcore_adapter) needs NVIDIA GPUs and the mcore_adapter package; LF trains "
             "with transformers' Trainer (DeepSpeed/FSDP for large models)")

RETIRED_VALUES: dict[tuple[str, str], str] = {
    ("pref_loss", "kto_pair"): "TRL dropped kto_pair (LlamaFactory 0.9.5 fails on it too); use pref_loss: bco_pair "
                               "or apo_zero, or stage: kto with kto_tag data",
}
"""(key, value) -> what to use instead: values LlamaFactory documents that no current library takes."""

# LlamaFactory 0.9.5: src/llamafactory/hparams/*.py (defaults as there; enums by their value).
KEYS: dict[str, LlamaFactoryKey] = {
    # data_args.py
    "template": _key("data", None),
    "dataset": _key("data", None),
    "eval_dataset": _key("data", None),
    "dataset_dir": _key("data", "data"),
    "media_dir": _key("data", None),
    "cutoff_len": _key("data", 2048),
    "train_on_prompt": _key("data", False),
    "mask_history": _key("data", False),
    "streaming": _key("data", False),
    "buffer_size": _key("data", 16384),
    "mix_strategy": _key("data", "concat"),
    "interleave_probs": _key("data", None),
    "overwrite_cache": _key("data", False),
    "preprocessing_batch_size": _key("data", 1000),
    "preprocessing_num_workers": _key("data", None),
    "max_samples": _key("data", None),
    "eval_num_beams": _key("data", None, "renamed", "LlamaFactory's deprecated name of num_beams", "num_beams"),
    "ignore_pad_token_for_loss": _key("data", True, "default_only",
                                      "LF never computes a loss on padding tokens (their labels are always -100)"),
    "val_size": _key("data", 0.0),
    "eval_on_each_dataset": _key("data", False),
    "packing": _key("data", None),
    "neat_packing": _key("data", False),
    "tool_format": _key("data", None),
    "default_system": _key("data", None),
    "enable_thinking": _key("data", True),
    "preserve_thinking": _key("data", False),
    "tokenized_path": _key("data", None),
    "data_shared_file_system": _key("data", False, "ignored",
                                    "LF prepares the data once, in the main process, before the training processes "
                                    "start, and every process reads that cache (shared file system or not)"),
    # evaluation_args.py
    "task": _key("eval", None),
    "task_dir": _key("eval", "evaluation"),
    "batch_size": _key("eval", 4),
    "seed": _key("eval", 42),
    "lang": _key("eval", "en"),
    "n_shot": _key("eval", 5),
    "save_dir": _key("eval", None),
    "download_mode": _key("eval", "reuse_dataset_if_exists", "ignored",
                          "LF's benchmarks are read from task_dir or from the files lf-eval ships; nothing is downloaded"),
    # finetuning_args.py: freeze, LoRA, OFT
    "freeze_trainable_layers": _key("finetuning", 2),
    "freeze_trainable_modules": _key("finetuning", "all"),
    "freeze_extra_modules": _key("finetuning", None),
    "additional_target": _key("finetuning", None),
    "lora_alpha": _key("finetuning", None),
    "lora_dropout": _key("finetuning", 0.0),
    "lora_rank": _key("finetuning", 8),
    "lora_target": _key("finetuning", "all"),
    "loraplus_lr_ratio": _key("finetuning", None),
    "loraplus_lr_embedding": _key("finetuning", 1e-6),
    "use_rslora": _key("finetuning", False),
    "use_dora": _key("finetuning", False),
    "pissa_init": _key("finetuning", False),
    "pissa_iter": _key("finetuning", 16),
    "pissa_convert": _key("finetuning", False),
    "create_new_adapter": _key("finetuning", False),
    "module_dropout": _key("finetuning", 0.0),
    "oft_rank": _key("finetuning", 0),
    "oft_block_size": _key("finetuning", 32),
    "oft_target": _key("finetuning", "all"),
    # RLHF
    "pref_beta": _key("finetuning", 0.1),
    "pref_ftx": _key("finetuning", 0.0),
    "pref_bco_weight": _key("finetuning", 0.0, "default_only",
                            "the BCO term mixed into DPO is TRL's loss list: pref_losses: [sigmoid, bco_pair] with "
                            "pref_loss_weights"),
    "pref_loss": _key("finetuning", "sigmoid"),
    "dpo_label_smoothing": _key("finetuning", 0.0),
    "kto_chosen_weight": _key("finetuning", 1.0),
    "kto_rejected_weight": _key("finetuning", 1.0),
    "simpo_gamma": _key("finetuning", 0.5),
    "ppo_buffer_size": _key("finetuning", 1),
    "ppo_epochs": _key("finetuning", 4),
    "ppo_score_norm": _key("finetuning", False),
    # LF's key too: set, it turns on the adaptive KL controller LlamaFactory always ran (from 0.2, horizon
    # 10000, as there); a recipe without it gets LF's fixed ppo_kl_coef (0.05)
    "ppo_target": _key("finetuning", 6.0),
    "ppo_whiten_rewards": _key("finetuning", False),
    "ref_model": _key("finetuning", None),
    "ref_model_adapters": _key("finetuning", None),
    "ref_model_quantization_bit": _key("finetuning", None),
    "reward_model": _key("finetuning", None),
    "reward_model_adapters": _key("finetuning", None, "default_only",
                                  "reward_model is the output_dir of an LF rm run, which holds its adapter and value head"),
    "reward_model_quantization_bit": _key("finetuning", None, "default_only",
                                          "with reward_model_type: lora the reward adapter shares the policy's base "
                                          "(quantised with quantization_bit); a full reward model loads unquantised"),
    "reward_model_type": _key("finetuning", "lora"),
    "ld_alpha": _key("finetuning", None),
    # GaLore, APOLLO, BAdam
    "use_galore": _key("finetuning", False),
    "galore_target": _key("finetuning", "all"),
    "galore_rank": _key("finetuning", 16),
    "galore_update_interval": _key("finetuning", 200),
    "galore_scale": _key("finetuning", 2.0),
    "galore_proj_type": _key("finetuning", "std"),
    "galore_layerwise": _key("finetuning", False),
    "use_apollo": _key("finetuning", False),
    "apollo_target": _key("finetuning", "all"),
    "apollo_rank": _key("finetuning", 16),
    "apollo_update_interval": _key("finetuning", 200),
    "apollo_scale": _key("finetuning", 32.0),
    "apollo_proj": _key("finetuning", "random"),
    "apollo_proj_type": _key("finetuning", "std"),
    "apollo_scale_type": _key("finetuning", "channel"),
    "apollo_layerwise": _key("finetuning", False),
    "apollo_scale_front": _key("finetuning", False),
    "use_badam": _key("finetuning", False),
    "badam_mode": _key("finetuning", "layer"),
    "badam_start_block": _key("finetuning", None),
    "badam_switch_mode": _key("finetuning", "ascending"),
    "badam_switch_interval": _key("finetuning", 50),
    "badam_update_ratio": _key("finetuning", 0.05),
    "badam_mask_mode": _key("finetuning", "adjacent"),
    "badam_verbose": _key("finetuning", 0),
    # SwanLab
    "use_swanlab": _key("finetuning", False),
    "swanlab_project": _key("finetuning", "llamafactory"),
    "swanlab_workspace": _key("finetuning", None),
    "swanlab_run_name": _key("finetuning", None),
    "swanlab_mode": _key("finetuning", "cloud"),
    "swanlab_api_key": _key("finetuning", None),
    "swanlab_logdir": _key("finetuning", None),
    "swanlab_lark_webhook_url": _key("finetuning", None, "default_only",
                                     "Lark notifications need swanlab's plugin; configure it in swanlab itself"),
    "swanlab_lark_secret": _key("finetuning", None, "default_only",
                                "Lark notifications need swanlab's plugin; configure it in swanlab itself"),
    # finetuning_args.py: FinetuningArguments
    "pure_bf16": _key("finetuning", False),
    "stage": _key("finetuning", "sft"),
    "finetuning_type": _key("finetuning", "lora"),
    "use_llama_pro": _key("finetuning", False),
    "use_adam_mini": _key("finetuning", False),
    "use_mca": _key("finetuning", False, "default_only", _MEGATRON),
    "use_hyper_parallel": _key("finetuning", False, "default_only",
                               "HyperParallel (Ascend NPU parallelism) needs NPUs; LF parallelises with DeepSpeed/FSDP"),
    "hyper_parallel_args": _key("finetuning", None, "default_only",
                                "read only with use_hyper_parallel, which LF does not offer"),
    "use_muon": _key("finetuning", False),
    "use_dft_loss": _key("finetuning", False),
    "use_asft_loss": _key("finetuning", False),
    "asft_alpha": _key("finetuning", 0.1),
    "use_eaft_loss": _key("finetuning", False),
    "eaft_alpha": _key("finetuning", 1.0),
    "freeze_vision_tower": _key("finetuning", True),
    "freeze_multi_modal_projector": _key("finetuning", True),
    "freeze_language_model": _key("finetuning", False),
    "compute_accuracy": _key("finetuning", False),
    "disable_shuffling": _key("finetuning", False),
    "early_stopping_steps": _key("finetuning", None),
    "plot_loss": _key("finetuning", False),
    "include_effective_tokens_per_second": _key("finetuning", False),
    # generating_args.py
    "do_sample": _key("generating", True),
    "temperature": _key("generating", 0.95),
    "top_p": _key("generating", 0.7),
    "top_k": _key("generating", 50),
    "num_beams": _key("generating", 1),
    "max_length": _key("generating", 1024, "ignored",
                       "LF bounds answers with max_new_tokens (LlamaFactory lets max_new_tokens override max_length)"),
    "max_new_tokens": _key("generating", 1024),
    "repetition_penalty": _key("generating", 1.0),
    "length_penalty": _key("generating", 1.0),
    "skip_special_tokens": _key("generating", True),
    # model_args.py: BaseModelArguments
    "model_name_or_path": _key("model", None),
    "adapter_name_or_path": _key("model", None),
    "adapter_folder": _key("model", None, "default_only",
                           "LF loads adapters from adapter_name_or_path only; give the adapter folders there"),
    "cache_dir": _key("model", None),
    "use_fast_tokenizer": _key("model", True, "default_only",
                               "LF loads the fast (Rust) tokenizer; it is what LF's label masks are checked against"),
    "resize_vocab": _key("model", False),
    "split_special_tokens": _key("model", False, "renamed",
                                 "true keeps special-token text in messages as plain text (LF's default); false "
                                 "lets it become control tokens", "special_tokens_in_content", inverted=True),
    "add_tokens": _key("model", None),
    "add_special_tokens": _key("model", None),
    "new_special_tokens_config": _key("model", None),
    "init_special_tokens": _key("model", "noise_init"),
    "model_revision": _key("model", "main"),
    "low_cpu_mem_usage": _key("model", True, "ignored",
                              "transformers 5 always loads weights without a random-initialisation pass"),
    "rope_scaling": _key("model", None),
    "flash_attn": _key("model", "auto"),
    "shift_attn": _key("model", False),
    "mixture_of_depths": _key("model", None),
    "use_unsloth": _key("model", False, "default_only",
                        "Unsloth needs an NVIDIA GPU and the unsloth package; LF does not use it (try use_liger_kernel)"),
    "use_unsloth_gc": _key("model", False, "default_only",
                           "Unsloth's gradient checkpointing needs an NVIDIA GPU and the unsloth package; LF "
                           "checkpoints with transformers' own by default"),
    "enable_liger_kernel": _key("model", False, "renamed", "transformers' Liger kernel switch", "use_liger_kernel"),
    "moe_aux_loss_coef": _key("model", None),
    "disable_gradient_checkpointing": _key("model", False),
    "use_reentrant_gc": _key("model", True),
    "upcast_layernorm": _key("model", False),
    "upcast_lmhead_output": _key("model", False),
    "train_from_scratch": _key("model", False),
    "infer_backend": _key("model", "huggingface"),
    "offload_folder": _key("model", "offload", "ignored",
                           "LF places the whole model on one device per process (offload with DeepSpeed ZeRO-3)"),
    "use_kv_cache": _key("model", True, "ignored",
                         "LF turns the KV cache off while training and on while generating"),
    "use_v1_kernels": _key("model", False, "default_only",
                           "LlamaFactory v1's fused NPU/GPU kernels are not in LF (use_liger_kernel on NVIDIA GPUs)"),
    "infer_dtype": _key("model", "auto"),
    "hf_hub_token": _key("model", None),
    "ms_hub_token": _key("model", None),
    "om_hub_token": _key("model", None),
    "print_param_status": _key("model", False),
    "trust_remote_code": _key("model", False),
    # QuantizationArguments
    "quantization_method": _key("model", "bnb"),
    "quantization_bit": _key("model", None),
    "quantization_type": _key("model", "nf4"),
    "double_quantization": _key("model", True),
    "quantization_device_map": _key("model", None),
    # ProcessorArguments
    "image_max_pixels": _key("model", 768 * 768),
    "image_min_pixels": _key("model", 32 * 32),
    "image_do_pan_and_scan": _key("model", False),
    "crop_to_patches": _key("model", False, "default_only", _CROP_TO_PATCHES),
    "video_max_pixels": _key("model", 256 * 256),
    "video_min_pixels": _key("model", 16 * 16),
    "video_fps": _key("model", 2.0),
    "video_maxlen": _key("model", 128),
    "use_audio_in_video": _key("model", False, "default_only", _AUDIO_IN_VIDEO),
    "audio_sampling_rate": _key("model", 16000),
    # ExportArguments
    "export_dir": _key("model", None),
    "export_size": _key("model", 5),
    "export_device": _key("model", "cpu"),
    "export_quantization_bit": _key("model", None),
    "export_quantization_dataset": _key("model", None),
    "export_quantization_nsamples": _key("model", 128),
    "export_quantization_maxlen": _key("model", 1024),
    "export_legacy_format": _key("model", False),
    "export_hub_model_id": _key("model", None),
    # VllmArguments
    "vllm_maxlen": _key("model", 4096),
    "vllm_gpu_util": _key("model", 0.7),
    "vllm_enforce_eager": _key("model", False),
    "vllm_max_lora_rank": _key("model", 32),
    "vllm_config": _key("model", None),
    # SGLangArguments
    "sglang_maxlen": _key("model", 4096, "ignored", _SGLANG),
    "sglang_mem_fraction": _key("model", 0.7, "ignored", _SGLANG),
    "sglang_tp_size": _key("model", -1, "ignored", _SGLANG),
    "sglang_config": _key("model", None, "ignored", _SGLANG),
    "sglang_lora_backend": _key("model", "triton", "ignored", _SGLANG),
    # KTransformersArguments
    "use_kt": _key("model", False, "default_only", _KT),
    "kt_weight_path": _key("model", None, "default_only", _KT),
    "kt_expert_checkpoint_path": _key("model", None, "default_only", _KT),
    "kt_use_lora_experts": _key("model", None, "default_only", _KT),
    "kt_lora_expert_num": _key("model", None, "default_only", _KT),
    "kt_lora_expert_intermediate_size": _key("model", None, "default_only", _KT),
    # training_args.py (besides transformers' Seq2SeqTrainingArguments, which LF passes on)
    "ray_num_workers": _key("training", 1),
    "ray_init_kwargs": _key("training", None),
    "master_addr": _key("training", None),
    "master_port": _key("training", None),
    "enable_torch_profiler": _key("training", False),
    "profiler_output_dir": _key("training", None),
    "profiler_wait_steps": _key("training", 1),
    "profiler_warmup_steps": _key("training", 1),
    "profiler_active_steps": _key("training", 1),
    "profiler_repeat": _key("training", 1),
    "profiler_record_shapes": _key("training", True),
    "profiler_profile_memory": _key("training", True),
    "profiler_with_stack": _key("training", True),
    "profile_modules": _key("training", None),
    "fp8": _key("training", False),
    "fp8_backend": _key("training", "auto"),
    "fp8_enable_fsdp_float8_all_gather": _key("training", False),
    "overwrite_output_dir": _key("training", False),
    # transformers' Seq2SeqTrainingArguments (LlamaFactory's base; LF's base is TrainingArguments)
    "sortish_sampler": _key("training", False, "default_only",
                            "LF batches in random order; for batches of similar lengths use train_sampling_strategy: group_by_length"),
    "predict_with_generate": _key("training", False),
    "generation_max_length": _key("training", None, "renamed",
                                  "do_predict's answer length (LF's max_new_tokens)", "max_new_tokens"),
    "generation_num_beams": _key("training", None, "renamed", "do_predict's beam search width", "num_beams"),
    # transformers 4 TrainingArguments keys that transformers 5 folded into fsdp_config
    "fsdp_transformer_layer_cls_to_wrap": _key("training", None, "renamed",
                                               "transformers 5 reads it from fsdp_config", "fsdp_config",
                                               entry="transformer_layer_cls_to_wrap"),
    # Megatron-Core training arguments (mcore_adapter) that LlamaFactory's Megatron recipes carry (USE_MCA=1)
    **{name: _key("training", None, "default_only", _MEGATRON) for name in (
        "tensor_model_parallel_size", "pipeline_model_parallel_size", "expert_model_parallel_size",
        "sequence_parallel", "bias_activation_fusion", "apply_rope_fusion", "use_distributed_optimizer",
        "overlap_param_gather", "overlap_grad_reduce", "moe_grouped_gemm", "moe_token_dispatcher_type",
        "recompute_granularity")},
    "generation_config": _key("training", None, "default_only",
                              "give do_predict's generation settings as keys (do_sample, temperature, top_p, "
                              "max_new_tokens, num_beams)"),
}


def _is_default(value: Any, default: Any) -> bool:
    return value == default or value in (None, False, "", [], {}) or (isinstance(value, str) and value.lower() == "none")


def translate_for(command: str, config: dict[str, Any], *sections: type, passthrough: Iterable[str] = (),
                  source: str = "") -> dict[str, Any]:
    """`translate` for a command that reads `sections` (and the `passthrough` keys)."""
    from lf_data.config import known_keys

    return translate(config, known_keys(*sections, passthrough=passthrough), command, source)


def translate(config: dict[str, Any], known: set[str], command: str, source: str = "") -> dict[str, Any]:
    """`config` with the LlamaFactory keys that `command` does not read resolved: renamed keys moved to
    their LF name, ignored keys dropped (one info line), refused values raised. Keys this table does
    not know are left for the caller's unknown-key error."""
    groups = COMMAND_GROUPS.get(command, frozenset())
    out: dict[str, Any] = {}
    ignored: list[str] = []
    where = f" in {source}" if source else ""
    for key, value in config.items():
        entry = KEYS.get(key)
        if key in known or entry is None or entry.group not in groups:
            merged = out.get(key)  # a renamed key may already have filled an entry of this mapping
            out[key] = {**value, **merged} if isinstance(merged, dict) and isinstance(value, dict) else value
            continue
        if entry.kind == "renamed" and entry.lf_key:
            if not entry.entry and entry.lf_key in config and config[entry.lf_key] != (not value if entry.inverted else value):
                raise ConfigError(f"{key}{where} is LlamaFactory's name for {entry.lf_key}, which the config also "
                                  f"sets to another value; keep one of them.")
            if entry.inverted:
                value = not (value is True or str(value).lower() == "true")
            if entry.entry and entry.lf_key in known:
                mapping = out.get(entry.lf_key, config.get(entry.lf_key)) or {}
                if not isinstance(mapping, dict):
                    raise ConfigError(f"{key}{where} goes into {entry.lf_key}, which is not a mapping here.")
                out[entry.lf_key] = {**mapping, entry.entry: value}
            elif entry.lf_key in known:
                out[entry.lf_key] = value
            elif not _is_default(value, entry.default):
                ignored.append(key)
        elif entry.kind == "default_only" and not _is_default(value, entry.default):
            raise ConfigError(f"{key}: {value!r}{where} is not supported by LF: {entry.note}.")
        else:
            ignored.append(key)
    if ignored:
        logger.info("lf %s does not use %s (LlamaFactory keys that change nothing here).", command, ", ".join(ignored))
    return out
