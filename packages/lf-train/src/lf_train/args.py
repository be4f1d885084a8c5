"""The LF-specific training keys; the usual Hugging Face `TrainingArguments` keys are accepted too."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lf_data.config import AtLeastOne, Fraction, NonNegative, Positive, Range, section
from lf_data.errors import ConfigError
from lf_data.run_folder import VALUE_HEAD_FILE
from lf_data.stages import StageName

REFERENCE_FREE_LOSSES = ("orpo", "simpo")
"""pref_loss values that compare chosen and rejected answers without a reference model."""


@section
class TrainArguments:
    stage: StageName = "sft"
    """Training stage (`lf_data.stages`): `pt` (language modelling on plain text), `sft` (supervised
    fine-tuning on conversations), `rm` (pairwise reward model with a value head), `dpo` (preference
    optimisation, see `pref_loss`), `kto` (desirable/undesirable answers), `ppo` (RL from a reward model),
    `grpo` (RL with verifiable rewards on groups of sampled completions, see reward_funcs)."""
    pref_loss: Literal["sigmoid", "hinge", "ipo", "orpo", "simpo"] = "sigmoid"
    """dpo stage loss: sigmoid (DPO), hinge, ipo, orpo or simpo (the last two need no reference model)."""
    pref_beta: Annotated[float, Positive] = 0.1
    """Strength of the preference term (DPO's beta; ORPO's lambda)."""
    pref_ftx: Annotated[float, NonNegative] = 0.0
    """Weight of an extra language-modelling loss on the chosen answers."""
    simpo_gamma: float = 0.5
    """SimPO's target reward margin."""
    use_galore: bool = False
    """GaLore: project full-parameter gradients to a low rank, so optimizer state stays small."""
    galore_target: list[str] | None = None
    """GaLore: module names whose weights are projected (`all` = every linear layer but the head)."""
    galore_rank: Annotated[int, AtLeastOne] = 16
    """GaLore: rank of the gradient projection."""
    galore_update_interval: Annotated[int, AtLeastOne] = 200
    """GaLore: steps between recomputing the projection (SVD of the gradient)."""
    galore_scale: Annotated[float, Positive] = 2.0
    """GaLore: scale of the projected update."""
    galore_layerwise: bool = False
    """GaLore: update layer by layer during the backward pass (lower peak memory; no gradient accumulation)."""
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = "std"
    """GaLore: which side of each gradient is projected (`std`: the smaller one; `full`: both)."""
    use_apollo: bool = False
    """APOLLO: AdamW whose per-channel learning-rate scaling is estimated in a random low-rank space,
    so optimizer state is about as small as SGD's (full or freeze tuning)."""
    apollo_target: list[str] | None = None
    """APOLLO: module names whose weights get the low-rank scaling (`all` = every linear layer but the head)."""
    apollo_rank: Annotated[int, AtLeastOne] = 16
    """APOLLO: rank of the auxiliary low-rank space."""
    apollo_update_interval: Annotated[int, AtLeastOne] = 200
    """APOLLO: steps between redrawing the projection."""
    apollo_scale: Annotated[float, Positive] = 32.0
    """APOLLO: scale of the update (the square root of it multiplies the scaled gradient)."""
    apollo_proj: Literal["svd", "random"] = "random"
    """APOLLO: the projection: `random` (Gaussian, no SVD) or `svd` (of the gradient, as GaLore)."""
    apollo_proj_type: Literal["std", "right", "left"] = "std"
    """APOLLO: which side of each gradient is projected (`std`: the smaller one)."""
    apollo_scale_type: Literal["channel", "tensor"] = "channel"
    """APOLLO: one scaling factor per channel, or one per weight matrix (APOLLO-Mini with rank 1)."""
    apollo_layerwise: bool = False
    """APOLLO: update layer by layer during the backward pass (lower peak memory; no gradient accumulation)."""
    apollo_scale_front: bool = False
    """APOLLO: apply the scale before the norm-growth limiter instead of after it."""
    use_adam_mini: bool = False
    """Adam-mini: one second-moment value per attention head / output neuron instead of per weight,
    which halves Adam's optimizer state (full or freeze tuning)."""
    use_dft_loss: bool = False
    """sft: Dynamic Fine-Tuning loss, each token's cross-entropy weighted by its (detached) probability."""
    use_asft_loss: bool = False
    """sft: Anchored SFT loss, the DFT loss plus asft_alpha x KL to the frozen starting model."""
    asft_alpha: Annotated[float, NonNegative] = 0.1
    """ASFT: weight of the KL anchor to the starting model."""
    use_eaft_loss: bool = False
    """sft: Entropy-Adaptive Fine-Tuning loss, each token's cross-entropy weighted by the model's
    normalised (top-20) entropy at that position, to the power eaft_alpha."""
    eaft_alpha: Annotated[float, NonNegative] = 1.0
    """EAFT: exponent of the normalised-entropy weight."""
    mixture_of_depths: Literal["convert", "load"] | None = None
    """Mixture-of-Depths: `convert` adds a token router to every other decoder layer, which then
    processes only the top 12.5% of tokens; `load` continues training a model an earlier `convert` run saved."""
    use_badam: bool = False
    """BAdam: full-parameter training that updates one block of layers at a time (block coordinate
    descent), so optimizer state exists only for the active block."""
    badam_mode: Literal["layer", "ratio"] = "layer"
    """BAdam: `layer` (one transformer layer per block) or `ratio` (a sparse share of every weight)."""
    badam_start_block: int | None = None
    """BAdam layer mode: the block to start from (default: set by badam_switch_mode)."""
    badam_switch_mode: Literal["ascending", "descending", "random", "fixed"] = "ascending"
    """BAdam layer mode: the order in which blocks take turns."""
    badam_switch_interval: Annotated[int, AtLeastOne] = 50
    """BAdam: optimizer steps before switching to the next block (or new sparse mask in ratio mode)."""
    badam_update_ratio: Annotated[float, Range(gt=0, le=1)] = 0.05
    """BAdam ratio mode: share of each weight's entries updated."""
    badam_mask_mode: Literal["adjacent", "scatter"] = "adjacent"
    """BAdam ratio mode: contiguous (`adjacent`) or random (`scatter`) entries."""
    badam_verbose: int = 0
    """BAdam: 1 or 2 prints which blocks train."""
    use_muon: bool = False
    """Muon (torch.optim.Muon) for the hidden weight matrices, AdamW for embeddings, head, norms and biases."""
    reward_model: str | None = None
    """ppo: output_dir of an `rm` run; its adapter and value head score answers on the shared base."""
    reward_model_type: Literal["lora", "full", "api"] = "lora"
    """ppo: `lora` (reward_model is an rm run's adapter, switched in on the shared base: one copy of
    the weights), `full` (reward_model is an rm run with full or freeze tuning, loaded as a second
    model) or `api` (reward_model is the URL of an `lf api` server running a reward model)."""
    ppo_epochs: Annotated[int, AtLeastOne] = 1
    """ppo: optimisation passes over each batch of samples."""
    ppo_kl_coef: Annotated[float, NonNegative] = 0.05
    """ppo: weight of the per-token KL penalty against the reference model."""
    max_new_tokens: Annotated[int, AtLeastOne] | None = None
    """Longest generated answer: ppo's samples (default 32) and do_predict's answers (default 1024)."""
    ppo_top_p: Annotated[float, Range(gt=0, le=1)] = 1.0
    """ppo: nucleus sampling of answers."""
    ppo_temperature: Annotated[float, Positive] = 1.0
    """ppo: sampling temperature of answers."""
    reward_funcs: list[str] | None = None
    """grpo: the rewards of each completion (`lf_train.rewards`): accuracy, format, json, length, or
    `module:function` (your own; needs trust_remote_code: true). Summed with reward_weights."""
    reward_weights: list[float] | None = None
    """grpo: one weight per reward_funcs entry (default: 1.0 each)."""
    num_generations: Annotated[int, Range(ge=2)] = 8
    """grpo: completions sampled per prompt (a group); per_device_train_batch_size x processes x
    gradient_accumulation_steps must be a multiple of it."""
    max_completion_length: Annotated[int, AtLeastOne] = 512
    """grpo: the longest completion generated, in tokens."""
    beta: Annotated[float, NonNegative] = 0.0
    """grpo: weight of the KL to the reference (LoRA: the adapter switched off); 0 loads no reference."""
    epsilon: Annotated[float, Positive] = 0.2
    """grpo: the clipping range of the policy ratio (lower side; upper side too unless epsilon_high)."""
    epsilon_high: Annotated[float, Positive] | None = None
    """grpo: the upper clipping range (DAPO's clip-higher, e.g. 0.28); default: epsilon."""
    num_iterations: Annotated[int, AtLeastOne] = 1
    """grpo: optimisation passes over each batch of completions (GRPO's mu)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """grpo: divide each advantage by the std of its group's rewards, of the batch's, or not (Dr. GRPO)."""
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = "dapo"
    """grpo: how token losses are averaged or clipped (TRL's names: grpo, dr_grpo, dapo, bnpo, cispo,
    sapo, luspo, vespo)."""
    importance_sampling_level: Literal["token", "sequence"] = "token"
    """grpo: policy ratios per token, or one per completion (`sequence`: GSPO, with loss_type grpo)."""
    mask_truncated_completions: bool = False
    """grpo: leave completions cut off at max_completion_length out of the loss (DAPO)."""
    kto_chosen_weight: Annotated[float, NonNegative] = 1.0
    """KTO: weight of desirable examples."""
    kto_rejected_weight: Annotated[float, NonNegative] = 1.0
    """KTO: weight of undesirable examples."""
    dpo_label_smoothing: Annotated[float, Range(ge=0, lt=0.5)] = 0.0
    """Conservative DPO: the assumed probability that a preference label is flipped (sigmoid loss)."""
    predict_with_generate: bool = True
    """do_predict: generate an answer for every row of eval_dataset (through lf-serve) and score it with
    BLEU-4 and ROUGE (lf-eval); LF only predicts by generating."""
    plot_loss: bool = True
    """Save the loss curve as training_loss.png in output_dir."""
    overwrite_output_dir: bool = False
    """Start over in an output_dir that already holds a finished run (its files are replaced)."""
    warmup_ratio: Annotated[float, Fraction] | None = None
    """Fraction of the steps used for linear learning-rate warm-up (sets warmup_steps)."""
    ref_model: str | None = None
    """dpo/kto: the reference model (a hub id or folder) instead of the starting policy (LoRA: the adapter switched off)."""
    ref_model_adapters: list[str] | None = None
    """dpo/kto: adapters merged into ref_model."""
    ref_model_quantization_bit: Literal[4, 8] | None = None
    """dpo/kto: load ref_model quantised to 4 or 8 bits with bitsandbytes (saves memory; it is never trained)."""
    include_effective_tokens_per_second: bool = False
    """Report `effective_tokens_per_sec` at the end: real (non-padding) tokens trained per second, all epochs."""
    disable_gradient_checkpointing: bool = False
    """LlamaFactory's switch: true keeps gradient checkpointing off (LF's default; turn it on with gradient_checkpointing)."""
    use_reentrant_gc: bool | None = None
    """Gradient checkpointing with the reentrant torch.utils.checkpoint (LF's default: non-reentrant)."""
    use_swanlab: bool = False
    """Log to SwanLab (report_to: swanlab; needs the swanlab package)."""
    swanlab_project: str | None = None
    """SwanLab project (SWANLAB_PROJECT)."""
    swanlab_workspace: str | None = None
    """SwanLab workspace (SWANLAB_WORKSPACE)."""
    swanlab_run_name: str | None = None
    """SwanLab experiment name (sets run_name when that is not given)."""
    swanlab_mode: Literal["cloud", "local", "offline", "disabled"] | None = None
    """SwanLab mode (SWANLAB_MODE)."""
    swanlab_api_key: str | None = None
    """SwanLab API key (SWANLAB_API_KEY; prefer setting the variable over writing the key in a config)."""
    swanlab_logdir: str | None = None
    """Folder of SwanLab's local logs (SWANLAB_LOG_DIR)."""
    disable_shuffling: bool = False
    """Train on the rows in dataset order (train_sampling_strategy: sequential)."""
    early_stopping_steps: Annotated[int, AtLeastOne] | None = None
    """Stop when the eval loss has not improved for this many evaluations (needs eval data and eval_strategy)."""
    compute_accuracy: bool = False
    """sft: also report token accuracy (of the next-token argmax on answer tokens) when evaluating."""
    print_param_status: bool = False
    """Log every parameter's name, shape, dtype, device and whether it trains, once the model is ready."""
    fp8: bool = False
    """Train the linear layers in FP8 through accelerate (needs a GPU with FP8 units: NVIDIA Ada/Hopper or newer)."""
    fp8_backend: Literal["auto", "torchao", "te", "msamp"] = "auto"
    """fp8: the FP8 implementation (torchao, Transformer Engine or MS-AMP; auto picks what is installed)."""
    fp8_enable_fsdp_float8_all_gather: bool = False
    """fp8 with FSDP: gather weights in FP8 (torchao backend)."""

    def __post_init__(self) -> None:
        if not self.galore_target:
            self.galore_target = ["all"]
        if self.reward_model and self.reward_model_type == "api":
            if not self.reward_model.startswith(("http://", "https://")):
                raise ConfigError(f"reward_model_type: api needs reward_model to be the URL of an `lf api` reward "
                                  f"server (http://host:port), not {self.reward_model!r}.")
        elif self.reward_model and not (Path(self.reward_model) / VALUE_HEAD_FILE).is_file():
            raise ConfigError(f"reward_model {self.reward_model!r} has no value_head.safetensors; give the "
                              "output_dir of an `lf train stage=rm` run.")
        elif self.reward_model and self.reward_model_type == "full" \
                and not (Path(self.reward_model) / "config.json").is_file():
            raise ConfigError(f"reward_model_type: full needs whole weights in {self.reward_model!r}; that run saved "
                              "an adapter: use reward_model_type: lora (or train the rm with finetuning_type: full).")
        if not self.apollo_target:
            self.apollo_target = ["all"]
        if sum((self.use_badam, self.use_galore, self.use_muon, self.use_apollo, self.use_adam_mini)) > 1:
            raise ConfigError("use_badam, use_galore, use_apollo, use_adam_mini and use_muon each choose the "
                              "optimizer; pick one.")
        losses = [key for key in ("use_dft_loss", "use_asft_loss", "use_eaft_loss") if getattr(self, key)]
        if len(losses) > 1:
            raise ConfigError(f"{' and '.join(losses)} each replace the sft loss; pick one.")
        if losses and self.stage != "sft":
            raise ConfigError(f"{losses[0]} replaces the supervised fine-tuning loss; it needs stage: sft.")
        grpo_keys = [key for key in ("reward_funcs", "reward_weights") if getattr(self, key) is not None]
        if grpo_keys and self.stage != "grpo":
            raise ConfigError(f"{grpo_keys[0]} scores the completions of stage grpo; set stage: grpo or remove it.")
        if self.dpo_label_smoothing and self.pref_loss != "sigmoid":
            raise ConfigError("dpo_label_smoothing applies to pref_loss: sigmoid only.")
