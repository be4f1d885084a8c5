"""The LF-specific training keys; the usual Hugging Face `TrainingArguments` keys are accepted too."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lf_data.config import AtLeastOne, Fraction, NonNegative, Positive, Range, section
from lf_data.errors import ConfigError
from lf_data.run_folder import VALUE_HEAD_FILE
from lf_data.stages import StageName

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
"""TRL DPOTrainer's `loss_type` names (each compares the policy with a reference model)."""
PADDING_FREE_STAGES = ("sft", "pt", "dpo", "kto")
"""The stages whose batches `padding_free` lays out (lf_train.padding_free)."""
FUSED_HEAD_STAGES = ("sft", "pt")
"""The stages whose loss `fused_lm_head` chooses (dpo, kto and grpo always use TRL's head)."""
REFERENCE_FREE_LOSSES = ("orpo", "simpo", "cpo")
"""pref_loss values that compare chosen and rejected answers without a reference model (TRL's ORPO and
CPO trainers: `cpo` is CPO's sigmoid loss, `simpo` its SimPO loss)."""
PREF_LOSSES = DPO_LOSSES + REFERENCE_FREE_LOSSES
LABEL_SMOOTHING_LOSSES = ("robust", "exo_pair", "aot", "aot_unpaired", "cpo", "simpo")
"""Losses TRL gives a label-smoothing epsilon (dpo_label_smoothing); `sigmoid` alone takes it too (cDPO)."""
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
"""The DPO losses TRL generalises to another f-divergence (f_divergence_type)."""
PPO_ONLY_DEFAULTS = {"ppo_buffer_size": 1, "ppo_score_norm": False, "ppo_whiten_rewards": False, "gamma": 1.0,
                     "lam": 0.95, "cliprange": 0.2, "cliprange_value": 0.2, "vf_coef": 0.1, "ppo_target": None,
                     "ppo_kl_horizon": 10000}
"""Keys only stage ppo reads, at their defaults; another value with another stage is refused."""


@section
class TrainArguments:
    stage: StageName = "sft"
    """Training stage (`lf_data.stages`): `pt` (language modelling on plain text), `sft` (supervised
    fine-tuning on conversations), `rm` (pairwise reward model with a value head), `dpo` (preference
    optimisation, see `pref_loss`), `kto` (desirable/undesirable answers), `ppo` (RL from a reward model),
    `grpo` (RL with verifiable rewards on groups of sampled completions, see reward_funcs)."""
    pref_loss: Literal[PREF_LOSSES] = "sigmoid"
    """dpo stage loss, by TRL's name: sigmoid (DPO), hinge, ipo, robust, bco_pair, sppo_hard, nca_pair, aot,
    aot_unpaired, apo_zero, apo_down, exo_pair, discopop, sigmoid_norm, sft; orpo, simpo, cpo need no reference."""
    pref_beta: Annotated[float, Positive] = 0.1
    """Strength of the preference term (DPO's beta; ORPO's lambda)."""
    pref_ftx: Annotated[float, NonNegative] = 0.0
    """Weight of an extra language-modelling loss on the chosen answers."""
    simpo_gamma: float = 0.5
    """SimPO's target reward margin."""
    pref_losses: list[Literal[DPO_LOSSES]] | None = None
    """dpo: several of TRL's DPO losses added together (TRL's loss_type list), e.g. [sigmoid, bco_pair, sft]
    (MPO); replaces pref_loss."""
    pref_loss_weights: list[float] | None = None
    """dpo: one weight per pref_losses entry (TRL's loss_weights; default 1.0 each)."""
    ld_alpha: Annotated[float, Range(ge=0, le=1)] | None = None
    """LD-DPO: weight of the answer tokens beyond the shorter answer's length (1 = plain DPO; TRL's ld_alpha)."""
    f_divergence_type: Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"] = "reverse_kl"
    """f-DPO: the divergence between policy and reference (TRL's f_divergence_type; reverse_kl = DPO)."""
    f_alpha_divergence_coef: float = 0.5
    """f-DPO: alpha of f_divergence_type alpha_divergence (TRL's f_alpha_divergence_coef)."""
    use_weighting: bool = False
    """WPO: weight each pair by the policy's length-normalised probability of both answers (TRL's use_weighting)."""
    discopop_tau: Annotated[float, Positive] = 0.05
    """pref_loss discopop: the temperature of its log-ratio modulation (TRL's discopop_tau)."""
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
    fused_lm_head: bool | None = None
    """sft/pt: compute the training loss from the hidden states without ever holding the logits (they cost 12
    bytes per token and vocabulary entry). Default: on, as TRL's fused Triton head on CUDA/XPU with triton,
    and on a CPU as torch's linear_cross_entropy in chunks of rows over the labelled positions only (faster
    than the logits there: bench/fused_head.py); off for soft-capped or scaled heads and MoE router losses
    outside a GPU. `true` forces TRL's head where torch's cannot run, `false` keeps the logits. Never with
    the token-weighted losses, label smoothing or use_liger_kernel (Liger's fused loss does the same job);
    evaluation keeps the logits its metrics need."""
    padding_free: bool | None = None
    """sft/pt/dpo/kto: lay each batch's examples end to end in one row, positions restarting at each, so no
    step computes on padding (SDPA runs example by example as `lf_sdpa`; FlashAttention-2 uses its
    varlen kernel). The loss equals the padded batch's. Default: on wherever it applies (text models on
    transformers' attention interface with sdpa or fa2, rows not packed, no sliding window shorter than
    cutoff_len); `false` pads each batch to its longest row instead."""
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
    ppo_kl_coef: Annotated[float, NonNegative] | None = None
    """ppo: weight of the per-token KL penalty against the reference model: 0.05 and fixed by default;
    with ppo_target the adaptive coefficient's starting value, by default 0.2 (TRL's init_kl_coef,
    where LlamaFactory starts)."""
    ppo_target: Annotated[float, Positive] | None = None
    """ppo: KL target of the adaptive KL coefficient (Ziegler et al. 2019; TRL 0.9's controller, which
    LlamaFactory always runs): starting at ppo_kl_coef (default 0.2 with this key), after each rollout the
    coefficient is multiplied by 1 + clip(KL / ppo_target - 1, -0.2, 0.2) x sequences / ppo_kl_horizon, KL
    being the rollout's summed KL per answer, averaged, and sequences its answers, both over all processes.
    Unset: ppo_kl_coef stays fixed (0.05)."""
    ppo_kl_horizon: Annotated[int, AtLeastOne] = 10000
    """ppo: how many sampled sequences the adaptive KL coefficient takes to move by its clipped error
    (TRL's horizon); read only with ppo_target."""
    max_new_tokens: Annotated[int, AtLeastOne] | None = None
    """Longest generated answer: ppo's samples (default 32) and do_predict's answers (default 1024)."""
    ppo_top_p: Annotated[float, Range(gt=0, le=1)] = 1.0
    """ppo: nucleus sampling of answers."""
    ppo_temperature: Annotated[float, Positive] = 1.0
    """ppo: sampling temperature of answers."""
    ppo_buffer_size: Annotated[int, AtLeastOne] = 1
    """ppo: a rollout samples this many x per_device_train_batch_size x gradient_accumulation_steps
    prompts per process, so each of its ppo_epochs passes takes this many optimizer steps."""
    ppo_score_norm: bool = False
    """ppo: normalise the reward model's scores by the running mean and standard deviation of all scores so far."""
    ppo_whiten_rewards: bool = False
    """ppo: whiten the per-token rewards (scale only, the mean is kept) before estimating advantages."""
    gamma: Annotated[float, Range(ge=0, le=1)] = 1.0
    """ppo: discount of future rewards in the advantage estimate (GAE; TRL's name)."""
    lam: Annotated[float, Range(ge=0, le=1)] = 0.95
    """ppo: GAE's lambda, trading the advantage estimate's bias against its variance (TRL's name)."""
    cliprange: Annotated[float, Positive] = 0.2
    """ppo: the clipping range of the policy ratio, 1 +- cliprange (TRL's name)."""
    cliprange_value: Annotated[float, Positive] = 0.2
    """ppo: how far the value estimate may move from the rollout's before its loss is clipped (TRL's name)."""
    vf_coef: Annotated[float, NonNegative] = 0.1
    """ppo: weight of the value head's loss next to the policy loss (TRL's name)."""
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
    use_vllm: bool = False
    """grpo: generate the completions with vLLM (a CUDA GPU and `pip install 'lf-train[vllm]'`)."""
    vllm_mode: Literal["colocate", "server"] = "colocate"
    """grpo with use_vllm: vLLM inside each training process, sharing its GPU (`colocate`), or a separate
    `trl vllm-serve` process on its own GPUs that gets the new weights every step (`server`)."""
    vllm_gpu_memory_utilization: Annotated[float, Range(gt=0, le=1)] = 0.3
    """grpo, colocate: the share of each GPU's memory vLLM may take (the rest trains)."""
    vllm_tensor_parallel_size: Annotated[int, AtLeastOne] = 1
    """grpo, colocate: GPUs one vLLM engine spans."""
    vllm_enable_sleep_mode: bool = False
    """grpo, colocate: vLLM releases its memory while the model trains (slower steps, less memory)."""
    vllm_server_base_url: str | None = None
    """grpo, server: the vLLM server's URL (default http://vllm_server_host:vllm_server_port)."""
    vllm_server_host: str = "0.0.0.0"
    """grpo, server: the host `trl vllm-serve` listens on."""
    vllm_server_port: Annotated[int, Range(ge=1, le=65535)] = 8000
    """grpo, server: its port."""
    vllm_server_timeout: Annotated[float, Positive] = 240.0
    """grpo, server: seconds to wait for the server to come up before the run stops."""
    kto_chosen_weight: Annotated[float, NonNegative] = 1.0
    """KTO: weight of desirable examples."""
    kto_rejected_weight: Annotated[float, NonNegative] = 1.0
    """KTO: weight of undesirable examples."""
    kto_loss: Literal["kto", "apo_zero_unpaired"] = "kto"
    """kto stage loss, by TRL's name: kto, or apo_zero_unpaired (APO-zero on unpaired answers, no KL term)."""
    dpo_label_smoothing: Annotated[float, Range(ge=0, lt=0.5)] = 0.0
    """The assumed probability that a preference label is flipped: conservative DPO with pref_loss sigmoid,
    TRL's label_smoothing for robust, exo_pair, aot, aot_unpaired, cpo and simpo."""
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
    """LlamaFactory's switch: true turns gradient checkpointing off (on by default, as in LlamaFactory)."""
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

    def _check_preference_losses(self) -> None:
        """What TRL's preference trainers would refuse once the model is loaded, refused now."""
        losses = list(self.pref_losses or [self.pref_loss])
        if self.pref_losses and self.pref_loss != "sigmoid":
            raise ConfigError("pref_losses replaces pref_loss; keep one of them.")
        if self.pref_loss_weights is not None and len(self.pref_loss_weights) != len(losses):
            raise ConfigError(f"pref_loss_weights has {len(self.pref_loss_weights)} weight(s) for {len(losses)} "
                              f"loss(es) ({', '.join(losses)}); give one weight per pref_losses entry.")
        free = self.pref_loss in REFERENCE_FREE_LOSSES
        if free and self.pref_loss_weights is not None:
            raise ConfigError(f"pref_loss_weights weighs TRL's DPO losses; pref_loss {self.pref_loss} is one loss.")
        smoothing = ("sigmoid", *LABEL_SMOOTHING_LOSSES) if not self.pref_losses else LABEL_SMOOTHING_LOSSES
        if self.dpo_label_smoothing and not set(losses) & set(smoothing):
            raise ConfigError(f"dpo_label_smoothing applies to pref_loss {', '.join(smoothing)}; "
                              f"{', '.join(losses)} takes none. Remove it.")
        if "exo_pair" in losses and not self.dpo_label_smoothing:
            raise ConfigError("pref_loss exo_pair needs dpo_label_smoothing above 0 (EXO's epsilon; its paper uses "
                              "1e-3).")
        if self.f_divergence_type != "reverse_kl" and not set(losses) <= set(F_DIVERGENCE_LOSSES):
            raise ConfigError(f"f_divergence_type {self.f_divergence_type} works with pref_loss "
                              f"{', '.join(F_DIVERGENCE_LOSSES)} only (TRL); not with {', '.join(losses)}.")
        if self.use_weighting and (free or set(losses) & {"aot", "aot_unpaired"}):
            raise ConfigError(f"use_weighting (WPO) weighs TRL's DPO losses other than aot and aot_unpaired; "
                              f"pref_loss {', '.join(losses)} cannot take it.")
        if free and self.ld_alpha is not None:
            raise ConfigError(f"ld_alpha weighs the log-probabilities of TRL's DPO losses; pref_loss "
                              f"{self.pref_loss} (TRL's ORPO/CPO) takes none. Remove it.")

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
        if self.fused_lm_head is not None and self.stage not in FUSED_HEAD_STAGES:
            raise ConfigError(f"fused_lm_head chooses the loss of stages sft and pt; stage {self.stage} decides "
                              "its own (TRL's dpo, kto and grpo trainers always fuse it). Remove the key.")
        if self.padding_free is not None and self.stage not in PADDING_FREE_STAGES:
            raise ConfigError(f"padding_free lays out the batches of stages sft, pt, dpo and kto; stage {self.stage} "
                              "pads its own. Remove the key.")
        ppo_keys = [key for key, default in PPO_ONLY_DEFAULTS.items() if getattr(self, key) != default]
        if ppo_keys and self.stage != "ppo":
            raise ConfigError(f"{ppo_keys[0]} is a key of stage ppo; set stage: ppo or remove it.")
        if self.ppo_target is None and self.ppo_kl_horizon != PPO_ONLY_DEFAULTS["ppo_kl_horizon"]:
            raise ConfigError("ppo_kl_horizon paces the adaptive KL coefficient, which ppo_target turns on; set "
                              "ppo_target or remove ppo_kl_horizon.")
        if self.ppo_target is not None and self.ppo_kl_coef == 0:
            raise ConfigError("ppo_target scales the KL coefficient, and ppo_kl_coef: 0 never moves; give ppo_kl_coef "
                              "> 0 (its starting value, default 0.2) or remove ppo_target.")
        grpo_keys = [key for key in ("reward_funcs", "reward_weights") if getattr(self, key) is not None]
        if grpo_keys and self.stage != "grpo":
            raise ConfigError(f"{grpo_keys[0]} scores the completions of stage grpo; set stage: grpo or remove it.")
        if self.use_vllm and self.stage != "grpo":
            raise ConfigError("use_vllm generates the completions of stage grpo (lf api and lf eval take "
                              "infer_backend: vllm); set stage: grpo or remove it.")
        self._check_preference_losses()
