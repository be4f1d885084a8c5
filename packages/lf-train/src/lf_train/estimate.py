"""`lf estimate`: the memory and time of a training run before it starts, from its config alone.

Why: "how much GPU memory do I need?" and "why did it run out of memory after an hour?" are answered
before anything loads. No weights are read: the model is built empty (on torch's meta device) from
its config.json or GGUF header, and LF's own fine-tuning setup (`lf_models.adapters.setup_finetuning`)
runs on that empty copy, so the parameter counts are exact (a LoRA count is peft's own). Memory then
follows from bytes per parameter (weights, gradients, optimizer state), bytes per token and layer for
the activations (the tensors autograd keeps for the backward pass of a Llama-style layer, counted
one by one: `tests/lf_train/test_estimate.py` checks the count against autograd itself) and
vocabulary x tokens for the logits and the loss. Time is the run's FLOPs over the device's peak at
a stated utilisation. `bench/estimate.py` compares the predictions with real runs.

One table of devices (`DEVICES`) holds every number that depends on the hardware.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data.errors import ConfigError

if TYPE_CHECKING:
    from lf_train.plan import TrainPlan

logger = logging.getLogger(__name__)
GIB = 1024**3


# -- devices -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Device:
    """What a training device offers: memory, peak matmul throughput, and the share of that peak a
    fine-tuning run reaches (utilisation; measured runs land between 0.2 and 0.45)."""

    name: str
    memory_gib: float
    """Memory a program can use (what torch reports as total, GiB)."""
    peak_tflops: float
    """Dense bf16/fp16 tensor throughput (fp32 matmul for a CPU), TFLOP/s, no sparsity."""
    bf16: bool = True
    utilisation: float = 0.3
    kind: str = "gpu"
    overhead_gib: float = 0.6
    """Memory the framework takes besides the model: CUDA context, kernels and cuBLAS workspaces and
    the allocator's unused cached blocks (GPUs); the interpreter, libraries, tokenizer and data (CPU)."""
    local: bool = False
    """This machine's own device (then `lf train`'s device checks apply)."""


# Memory: the usable GiB a device reports (an "80GB" H100 shows 79.6). Peak: NVIDIA's dense bf16/fp16
# tensor figures (fp32 accumulate), without the 2:4 sparsity doubling. V100 and T4 have no bf16.
DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("H100 80GB", 79.6, 989.0),
    Device("H200", 139.8, 989.0),
    Device("A100 80GB", 79.2, 312.0),
    Device("A100 40GB", 39.4, 312.0),
    Device("A10G", 22.0, 70.0),  # AWS's A10G (NVIDIA's A10 is rated 125)
    Device("L4", 22.0, 121.0),
    Device("RTX 4090", 23.6, 165.0),
    Device("RTX 3090", 23.6, 71.0),
    Device("V100", 31.7, 125.0, bf16=False),  # the 32 GB card
    Device("T4", 14.6, 65.0, bf16=False),
)}
CPU_UTILISATION = 0.4
"""Share of the measured fp32 matmul peak a CPU training step reaches (bench/estimate.py measures it)."""
CPU_LIBRARIES_GIB = 0.95
"""Resident memory of a CPU training process before it loads anything: the interpreter with torch,
transformers, peft and LF imported (bench/estimate.py measures it as its baseline)."""
CPU_RUNTIME_GIB = 0.1
"""What a CPU training process holds besides the model and the libraries: tokenizer, data, Trainer."""
CPU_HEAP_NOTE = ("on a CPU glibc may keep freed heap blocks resident: the process's peak RSS can exceed this "
                 "estimate by up to about the size of the weights (MALLOC_MMAP_THRESHOLD_=131072 returns them)")
"""Measured on SmolLM2-135M: 0.3-0.5 GiB above the tensors' peak with glibc's defaults, none with a fixed
mmap threshold; bench/estimate.py measures with the fixed threshold (the tensors torch holds)."""
CPU_FALLBACK_GFLOPS = 50.0
"""A conservative fp32 matmul figure for a CPU when it cannot be measured."""


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def known_devices() -> list[str]:
    return ["cpu", *DEVICES]


def find_device(name: str | None) -> Device:
    """A device by name (`H100`, `a100-40gb`, `cpu`), or this machine's when no name is given.
    An unknown name is an error that lists the known ones."""
    if name is None:
        return local_device()
    wanted = _normalise(name)
    if wanted in ("cpu", "thiscpu"):
        return cpu_device()
    exact = [d for key, d in DEVICES.items() if _normalise(key) == wanted]
    close = exact or [d for key, d in DEVICES.items() if _normalise(key).startswith(wanted)]
    if len(close) == 1:
        return close[0]
    if len(close) > 1:
        raise ConfigError(f"--device {name!r} matches {', '.join(d.name for d in close)}; name one of them.")
    raise ConfigError(f"--device {name!r} is not a device LF knows. Known devices: {', '.join(known_devices())} "
                      "(cpu is this machine's processor).")


def local_device() -> Device:
    """This machine's first GPU (by name from the table, else from what torch reports), else its CPU."""
    import torch

    if not torch.cuda.is_available():
        return cpu_device()
    reported = torch.cuda.get_device_name(0)
    memory = torch.cuda.get_device_properties(0).total_memory / GIB
    wanted = _normalise(reported)
    for key, device in DEVICES.items():
        model, *size = key.split()
        if _normalise(model) in wanted and (not size or _normalise(size[0]) in wanted or
                                            abs(device.memory_gib - memory) < 4):
            return dataclasses.replace(device, memory_gib=memory, local=True)
    return Device(reported, memory, _measured_tflops("cuda"), bf16=torch.cuda.is_bf16_supported(), local=True)


def cpu_device() -> Device:
    """This machine's processor: its RAM and its fp32 matmul throughput, measured once and cached."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        memory = 16.0
    return Device(f"CPU ({_cpu_name()}, {_threads()} threads)", memory, _measured_tflops("cpu"), bf16=False,
                  utilisation=CPU_UTILISATION, kind="cpu", overhead_gib=CPU_LIBRARIES_GIB + CPU_RUNTIME_GIB, local=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown processor"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


@functools.cache
def _measured_tflops(kind: str) -> float:
    """Matmul throughput of this machine (fp32 on a CPU, bf16 on a GPU), measured once per machine,
    thread count and torch version and cached in LF's cache folder (a second or so the first time)."""
    import torch

    from lf_models.gguf_import import cache_root

    key = f"{kind}|{_cpu_name() if kind == 'cpu' else torch.cuda.get_device_name(0)}|{_threads()}|{torch.__version__}"
    path = cache_root() / "estimate" / "devices.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return float(cached[key])
    try:
        value = _time_matmul(kind)
    except Exception:  # noqa: BLE001 - a device that cannot run the probe: a conservative figure
        return CPU_FALLBACK_GFLOPS / 1000
    if kind == "cpu" and os.getloadavg()[0] > (os.cpu_count() or 1):  # other work ran: measure again next time
        return value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cached[key] = value
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        tmp.replace(path)
    except OSError:
        pass
    return value


def _time_matmul(kind: str) -> float:
    """The best of many single matmuls: on a machine shared with other work the fastest one is the
    closest to what the device does alone."""
    import time

    import torch

    size, trials = (1024, 30) if kind == "cpu" else (8192, 20)
    dtype = torch.float32 if kind == "cpu" else torch.bfloat16
    a = torch.randn(size, size, dtype=dtype, device=kind)
    b = torch.randn(size, size, dtype=dtype, device=kind)
    a @ b
    best = math.inf
    for _ in range(trials):
        if kind == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if kind == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


# -- the model, empty --------------------------------------------------------------------------------

@dataclass
class ModelFacts:
    """What the estimate needs to know about the model with its fine-tuning method attached."""

    total: int
    """Every parameter (vision tower, value head and adapters included)."""
    trainable: int
    """Parameters the optimizer updates (BAdam: the largest block, the one active at a time)."""
    upcast: int
    """Parameters trainable when the model loads: LF keeps them in fp32 under mixed precision."""
    trainable_linear: int
    """Trainable weights of linear layers (autocast keeps a half-precision copy of each for the backward)."""
    quantized: list[tuple[int, int]]
    """(elements, output features) of each linear weight an on-the-fly quantiser replaces."""
    projected: list[tuple[int, int]]
    """Shapes of the trainable weight matrices GaLore or APOLLO project (their targets)."""
    embedding_like: int
    """Trainable embedding and output-head parameters (Adam-mini and Muon keep full Adam state for them)."""
    small_tensors: int
    """Trainable parameters in tensors of fewer than 4096 elements (8-bit optimizers keep them in 32 bits)."""
    embedding_trainable: int
    """Trainable `nn.Embedding` weights (the Trainer gives them 32-bit state under an 8-bit optimizer)."""
    heap_tensors: int
    """Parameters in tensors under 32 MiB in fp32: glibc serves them (and their churn) from its heap."""
    largest_tensor: int
    largest_layer: int
    """Parameters of the largest decoder layer (BAdam's block; ZeRO-3 and FSDP gather one at a time)."""
    head_trainable: int
    """Trainable output-head parameters: their gradient exists while the activations still do."""
    matmul_per_token: int
    """Weights multiplied per token in the forward pass (MoE: the experts a token visits)."""
    trainable_matmul_per_token: int
    layers: int
    layers_in_backward: float
    """Decoder layers the backward pass goes through (freeze tuning stops at the first trained layer)."""
    hidden: int
    intermediate: int
    """MLP width a token goes through (MoE: top-k experts plus shared ones)."""
    heads: int
    kv_dim: int
    q_dim: int
    vocab: int
    gated_mlp: bool
    tied_embeddings: bool
    vision_params: int
    model_type: str
    torch_head: bool = True
    """torch's linear_cross_entropy can compute the loss (lf_train.fused_head: no soft-capped or scaled logits)."""
    notes: list[str] = field(default_factory=list)


def read_model_config(model_args: Any) -> Any:
    """The model's transformers config without its weights: config.json of a local folder, a GGUF
    file's header (bundled models too), or a hub id's config.json (only that file is fetched)."""
    from transformers import AutoConfig

    from lf_models.bundled import BUNDLED_MODELS

    ref = model_args.model_name_or_path
    hub = {"trust_remote_code": model_args.trust_remote_code}
    gguf: Path | None = None
    if ref in BUNDLED_MODELS:
        gguf = BUNDLED_MODELS[ref].path()
    elif ref.endswith(".gguf"):
        gguf = Path(ref).expanduser()
        if not gguf.is_file():
            raise ConfigError(f"model file {ref!r} does not exist; check model_name_or_path.")
    where = ref
    try:
        if gguf is not None:
            return copy.deepcopy(_gguf_config(str(gguf.resolve()), _file_stamp(gguf)))
        from lf_models.loader import resolve_model

        source = resolve_model(model_args)  # the same checks and messages as lf train (a missing folder...)
        where = source.path
        if not source.local:
            hub.update(revision=model_args.model_revision, cache_dir=model_args.cache_dir)
            if model_args.hf_hub_token:
                hub["token"] = model_args.hf_hub_token
        return AutoConfig.from_pretrained(source.path, **hub)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable config: one line that says why
        hint = "" if Path(ref).expanduser().exists() or gguf else (
            " Without network access, download the model and point model_name_or_path at its folder.")
        raise ConfigError(f"could not read the config of {where!r}: {type(err).__name__}: "
                          f"{str(err).splitlines()[0].rstrip('.')}.{hint}") from None


@functools.lru_cache(maxsize=8)
def _gguf_config(path: str, stamp: tuple[int, int]) -> Any:
    """A GGUF file's config, parsed once per file version: its header holds the whole vocabulary (seconds
    to read for a 50k-token model), and the board re-estimates on every change of its form."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(Path(path).parent, gguf_file=Path(path).name)


def _file_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if getter is not None else config


def analyse_model(plan: TrainPlan, config: Any, value_head: bool = False) -> ModelFacts:
    """Build the model empty from `config`, attach the fine-tuning method as `lf train` would, and
    read off the counts the estimate needs."""
    import torch

    from lf_models.adapters import decoder_layers, lora_targets, setup_finetuning
    from lf_models.args import ADAPTER_TYPES
    from lf_models.families import family_for, model_class_for
    from lf_train.fused_head import torch_head_blocker

    model_args, finetuning, train = plan.model, plan.finetuning, plan.train
    notes: list[str] = []
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of libraries about an empty model
        try:
            model = model_class_for(config).from_config(config, trust_remote_code=model_args.trust_remote_code)
        except Exception as err:  # noqa: BLE001 - an architecture transformers cannot build
            raise ConfigError(f"could not build {getattr(config, 'model_type', 'the model')} from its config: "
                              f"{type(err).__name__}: {str(err).splitlines()[0]}") from None
        base = model
        # a fresh adapter of the configured rank stands for one being continued; PiSSA's SVD cannot run
        # on empty weights and gives the same shapes as a plain LoRA
        setup_args = dataclasses.replace(finetuning, pissa_init=False, pissa_convert=False)
        setup_model = dataclasses.replace(model_args, adapter_name_or_path=None)
        if model_args.adapter_name_or_path:
            notes.append("the adapter being continued is counted as a fresh one of the configured rank")
        model = setup_finetuning(model, setup_model, setup_args, is_trainable=True)
    family = family_for(config)
    layers = decoder_layers(base)
    layer_of = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    layer_sizes = [sum(p.numel() for p in layer.parameters()) for layer in layers]
    head = base.get_output_embeddings()
    embed = base.get_input_embeddings()
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    embed_ids = {id(p) for p in embed.parameters()} if embed is not None else set()
    vision_ids = _tower_parameter_ids(base, family)

    params = {id(p): p for p in model.parameters()}  # tied weights once
    total = sum(p.numel() for p in params.values())
    trainable = [p for p in params.values() if p.requires_grad]
    text = _text_config(config)
    quantizing = model_args.quantization_bit is not None
    galore_targets: list[str] = []
    if train.use_galore or train.use_apollo:
        names = train.galore_target if train.use_galore else train.apollo_target
        galore_targets = lora_targets(base, list(names or ["all"]), "galore_target" if train.use_galore
                                      else "apollo_target")
    quantized, projected = [], []
    trainable_linear = matmul = trainable_matmul = 0
    experts_share = _expert_share(text)
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        weight = module.weight
        is_head = id(weight) in head_ids
        share = experts_share if ".experts." in name else 1.0
        matmul += int(weight.numel() * share)
        if weight.requires_grad:
            trainable_linear += weight.numel()
            trainable_matmul += int(weight.numel() * share)
        if quantizing and not is_head and not weight.requires_grad and "lora_" not in name \
                and id(weight) not in vision_ids:
            quantized.append((weight.numel(), weight.shape[0]))
        if galore_targets and weight.requires_grad and name.split(".")[-1] in galore_targets and not is_head:
            projected.append((weight.shape[0], weight.shape[1]))
    matmul += _fused_expert_params(base, text)
    if head is not None and not isinstance(head, torch.nn.Linear):
        matmul += head.weight.numel()
    first_trained = min((layer_of[id(p)] for p in trainable if id(p) in layer_of), default=len(layers))
    before_layers = any(id(p) in embed_ids or id(p) in vision_ids for p in trainable)
    in_backward = len(layers) if before_layers else len(layers) - first_trained
    upcast = sum(p.numel() for p in trainable)
    if train.use_badam:  # one block trains at a time; BAdam never trains the embeddings or the head
        notes.append("BAdam: the optimizer state and gradients of one decoder layer at a time")
        trainable = [p for p in layers[max(range(len(layers)), key=layer_sizes.__getitem__)].parameters()]
        block = {id(p) for p in trainable}
        trainable_linear = trainable_matmul = sum(m.weight.numel() for m in model.modules()
                                                  if isinstance(m, torch.nn.Linear) and id(m.weight) in block)
        in_backward = len(layers) / 2 if train.badam_switch_mode != "fixed" else in_backward
    if value_head:
        hidden = text.hidden_size
        total += hidden + 1
        upcast += hidden + 1
    n_trainable = sum(p.numel() for p in trainable) + (text.hidden_size + 1 if value_head else 0)
    trains = {id(p) for p in trainable}
    layer0 = layers[0] if len(layers) else base
    names = {n.split(".")[-1] for n, _ in layer0.named_modules()}
    gated = any("gate" in n and n not in ("gate",) for n in names) or "w3" in names
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    if finetuning.finetuning_type in ADAPTER_TYPES and finetuning.lora_dropout:
        notes.append("lora_dropout > 0 keeps a dropped copy of each adapted layer's input (not counted)")
    return ModelFacts(
        total=total, trainable=n_trainable, upcast=upcast, trainable_linear=trainable_linear,
        quantized=quantized, projected=projected,
        embedding_like=sum(p.numel() for p in trainable if id(p) in head_ids | embed_ids),
        small_tensors=sum(p.numel() for p in trainable if p.numel() < 4096),
        heap_tensors=sum(p.numel() for p in params.values() if p.numel() * 4 < 32 * 1024**2),
        embedding_trainable=sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)
                                for p in m.parameters() if id(p) in trains and p.numel() >= 4096),
        largest_tensor=max((p.numel() for p in trainable), default=0),
        largest_layer=max(layer_sizes, default=0),
        head_trainable=sum(p.numel() for p in head.parameters() if id(p) in trains) if head is not None else 0,
        matmul_per_token=matmul, trainable_matmul_per_token=trainable_matmul,
        layers=len(layers), layers_in_backward=in_backward, hidden=text.hidden_size,
        intermediate=_mlp_width(text), heads=heads, kv_dim=kv_heads * head_dim, q_dim=heads * head_dim,
        vocab=text.vocab_size, gated_mlp=gated, tied_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        vision_params=sum(p.numel() for p in params.values() if id(p) in vision_ids),
        model_type=str(getattr(config, "model_type", "?")), torch_head=torch_head_blocker(model) is None, notes=notes)


def _mlp_width(text: Any) -> int:
    """The MLP width one token goes through: the dense MLP's, or top-k experts plus the shared ones."""
    experts = getattr(text, "num_experts_per_tok", None) or getattr(text, "moe_topk", None)
    moe_width = getattr(text, "moe_intermediate_size", None)
    if experts and moe_width:
        shared = getattr(text, "shared_expert_intermediate_size", None) or (
            (getattr(text, "n_shared_experts", None) or 0) * moe_width)
        return int(experts * moe_width + shared)
    width = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or getattr(text, "ffn_dim", None)
    return int(width or 4 * text.hidden_size)


def _expert_share(text: Any) -> float:
    """Share of the routed experts one token visits (top-k over the number of experts)."""
    experts = getattr(text, "num_local_experts", None) or getattr(text, "num_experts", None) \
        or getattr(text, "n_routed_experts", None)
    chosen = getattr(text, "num_experts_per_tok", None)
    return chosen / experts if experts and chosen else 1.0


def _fused_expert_params(model: Any, text: Any) -> int:
    """Fused 3-D expert weights (transformers 5 MoE) a token multiplies: top-k of them."""
    share = _expert_share(text)
    if share == 1.0:
        return 0
    return int(sum(p.numel() for n, p in model.named_parameters() if ".experts." in n and p.ndim == 3) * share)


def _tower_parameter_ids(model: Any, family: Any) -> set[int]:
    found: set[int] = set()
    for path in (family.towers.get("vision_tower", ()) if family is not None else ()):
        module = _get_module(model, path)
        if module is not None:
            found |= {id(p) for p in module.parameters()}
    return found


def _get_module(model: Any, path: str) -> Any:
    module = model
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


# -- the arithmetic ----------------------------------------------------------------------------------

@dataclass
class Estimate:
    """Peak memory per device and time of a run; bytes unless named otherwise."""

    model: str
    method: str
    device: Device
    gpus: int
    precision: str
    total_params: int
    trainable_params: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    """With the run's own gradient checkpointing setting."""
    activations_checkpointed: float
    activations_full: float
    logits: float
    overhead: float
    gradient_checkpointing: bool
    peak: float
    host: float
    """Host (CPU) memory of the state DeepSpeed or FSDP offload keeps there."""
    sequence_length: int
    sequences_per_device: int
    tokens_per_step: int
    flops_per_token: float
    tokens_per_second: float
    steps: int | None
    seconds: float | None
    notes: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    facts: ModelFacts | None = None

    @property
    def fits(self) -> bool:
        return self.peak <= self.device.memory_gib * GIB

    def summary(self) -> str:
        """One line: what `lf train` prints at start."""
        run = f", {_duration(self.seconds)} for {self.steps:,} step{'s' if self.steps > 1 else ''}" \
            if self.seconds is not None and self.steps else ""
        return (f"estimate: {self.method}, {_count(self.trainable_params)} of {_count(self.total_params)} parameters "
                f"trained; peak {_gib(self.peak)} of {self.device.memory_gib:.1f} GiB per device "
                f"({self.device.name}{f' x {self.gpus}' if self.gpus > 1 else ''}); ~{self.tokens_per_second:,.0f} "
                f"tokens/s{run}")

    def figures(self) -> dict[str, str]:
        """The numbers as short display strings, by name, formatted as `lf estimate` formats them: for a
        tool that words them itself (the board's translated block) without redoing any arithmetic.
        `steps` and `duration` are empty when the length of the run is unknown."""
        known = self.steps is not None and self.steps > 0 and self.seconds is not None
        return {
            "method": self.method, "precision": self.precision,
            "device": f"{self.device.name}{f' x {self.gpus}' if self.gpus > 1 else ''}",
            "memory": f"{self.device.memory_gib:.1f} GiB",
            "trainable": _count(self.trainable_params), "total": _count(self.total_params),
            "percent": f"{100 * self.trainable_params / max(self.total_params, 1):.2f}%",
            "peak": _gib(self.peak), "weights": _gib(self.weights), "gradients": _gib(self.gradients),
            "optimizer": _gib(self.optimizer), "activations": _gib(self.activations), "logits": _gib(self.logits),
            "overhead": _gib(self.overhead), "host": _gib(self.host),
            "tokens_per_second": f"{self.tokens_per_second:,.0f}",
            "steps": f"{self.steps:,}" if known else "", "duration": _duration(self.seconds) if known else "",
        }

    def table(self) -> str:
        """The breakdown `lf estimate` prints."""
        gc = "on" if self.gradient_checkpointing else "off"
        rows = [
            ("model", f"{self.model} ({self.facts.model_type if self.facts else '?'})"),
            ("method", self.method),
            ("device", f"{self.device.name}{f' x {self.gpus}' if self.gpus > 1 else ''}, "
                       f"{self.device.memory_gib:.1f} GiB, {self.precision}"),
            ("parameters", f"{self.total_params:,} total, {self.trainable_params:,} trainable "
                           f"({100 * self.trainable_params / max(self.total_params, 1):.2f}%)"),
        ]
        if self.facts and self.facts.vision_params:
            rows.append(("  of which vision tower", f"{self.facts.vision_params:,}"))
        rows += [
            ("batch", f"{self.sequences_per_device} sequences x {self.sequence_length} tokens per device"),
            ("", ""),
            ("memory per device", "GiB"),
            ("  weights", _gib(self.weights, unit=False)),
            ("  gradients", _gib(self.gradients, unit=False)),
            ("  optimizer state", _gib(self.optimizer, unit=False)),
            ("  activations", f"{_gib(self.activations, unit=False)}   (gradient checkpointing {gc}; "
                              f"on: {_gib(self.activations_checkpointed, unit=False)}, "
                              f"off: {_gib(self.activations_full, unit=False)})"),
            ("  logits and loss", _gib(self.logits, unit=False)),
            ("  framework overhead", _gib(self.overhead, unit=False)),
            ("  peak", f"{_gib(self.peak, unit=False)}   ({'fits' if self.fits else 'does NOT fit'} in "
                       f"{self.device.memory_gib:.1f} GiB)"),
        ]
        if self.host:
            rows.append(("  offloaded to host RAM", _gib(self.host, unit=False)))
        rows += [
            ("", ""),
            ("FLOPs per token", f"{self.flops_per_token / 1e9:,.3g} GFLOP"),
            ("throughput", f"~{self.tokens_per_second:,.0f} tokens/s ({self.device.peak_tflops:.3g} TFLOP/s peak x "
                           f"{self.device.utilisation:.0%} utilisation{f' x {self.gpus}' if self.gpus > 1 else ''})"),
            ("tokens per step", f"{self.tokens_per_step:,} (at most: cutoff_len per sequence)"),
            ("whole run", f"{self.steps:,} step{'s' if self.steps > 1 else ''}, {_duration(self.seconds)}"
             if self.steps and self.seconds is not None
             else "unknown (the number of rows is not known here; set max_steps)"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}".rstrip() for k, v in rows]
        lines += [f"note: {n}" for n in self.notes]
        if not self.fits:
            lines.append("would fit with: " + ("; ".join(self.suggestions) if self.suggestions else
                                               "none of the usual changes alone (try a larger device or more GPUs)"))
        return "\n".join(lines)


def _gib(value: float, unit: bool = True) -> str:
    digits = 2 if value >= 0.1 * GIB or value == 0 else 4  # a tiny model's parts still show
    return f"{value / GIB:.{digits}f}{' GiB' if unit else ''}"


def _count(n: int) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    return str(n)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# optim -> (states per parameter, bytes per state: None = the parameter's own dtype)
OPTIMIZER_STATE: dict[str, tuple[int, float | None]] = {
    "adamw_torch": (2, None), "adamw_torch_fused": (2, None), "adamw_torch_xla": (2, None),
    "adamw_torch_npu_fused": (2, None), "adamw_anyprecision": (2, None), "adamw_torch_4bit": (2, 0.5),
    "adamw_torch_8bit": (2, 1), "adamw_bnb_8bit": (2, 1), "adamw_8bit": (2, 1), "paged_adamw_8bit": (2, 1),
    "paged_adamw_32bit": (2, 4), "ademamix": (3, None), "ademamix_8bit": (3, 1), "paged_ademamix_8bit": (3, 1),
    "paged_ademamix_32bit": (3, 4), "lion_8bit": (1, 1), "lion_32bit": (1, 4), "paged_lion_8bit": (1, 1),
    "paged_lion_32bit": (1, 4), "rmsprop": (1, None), "rmsprop_bnb": (1, 4), "rmsprop_bnb_8bit": (1, 1),
    "rmsprop_bnb_32bit": (1, 4), "sgd": (0, None), "adagrad": (1, None), "adafactor": (0, None),
    "lomo": (0, None), "adalomo": (0, None), "schedule_free_adamw": (2, None), "schedule_free_radam": (2, None),
    "schedule_free_sgd": (1, None), "grokadamw": (3, None), "stable_adamw": (2, None),
}


def _training_default(key: str) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments.__dataclass_fields__[key].default


def _hf(plan: TrainPlan, key: str) -> Any:
    args = plan.training_args
    if args is not None:
        return getattr(args, key)
    if key == "gradient_checkpointing":  # LF's default: on (lf_train.plan.uses_checkpointing)
        from lf_train.plan import uses_checkpointing

        return uses_checkpointing(plan.hf, plan.train)
    return plan.hf[key] if key in plan.hf else _training_default(key)


def _optim_name(plan: TrainPlan) -> str:
    optim = _hf(plan, "optim")
    return str(getattr(optim, "value", optim))


def _precision(plan: TrainPlan, device: Device) -> tuple[str, int]:
    """(name, bytes of a half-precision value or 4) for this device, as `lf train` would choose."""
    if plan.model.pure_bf16:
        return "pure bf16", 2
    if plan.training_args is not None:  # finish_plan ran on this machine: its choice
        bf16, fp16 = plan.training_args.bf16, plan.training_args.fp16
    else:
        bf16, fp16 = plan.hf.get("bf16"), plan.hf.get("fp16")
        if device.kind == "cpu":
            bf16 = fp16 = False
        elif bf16 and not device.bf16:
            raise ConfigError(f"bf16: true but the {device.name} does not support bfloat16; use fp16: true.")
        elif not bf16 and not fp16 and not (plan.hf.get("bf16") is False and plan.hf.get("fp16") is False):
            bf16, fp16 = device.bf16, not device.bf16
    if bf16:
        return "bf16 mixed precision", 2
    if fp16:
        return "fp16 mixed precision", 2
    return "fp32", 4


def _deepspeed_config(plan: TrainPlan) -> dict[str, Any] | None:
    found = plan.hf.get("deepspeed")
    if not found:
        return None
    if isinstance(found, dict):
        return found
    try:
        return json.loads(Path(found).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"deepspeed config {found!r} cannot be read: {err.strerror}.") from None
    except ValueError as err:
        raise ConfigError(f"deepspeed config {found!r} is not valid JSON: {err}.") from None


def _sharding(plan: TrainPlan) -> tuple[str, int, bool, bool]:
    """(what shards, ZeRO stage equivalent 0-3, optimizer offloaded, parameters offloaded)."""
    ds = _deepspeed_config(plan)
    if ds is not None:
        zero = ds.get("zero_optimization") or {}
        stage = int(zero.get("stage", 0) or 0)
        device = lambda key: str((zero.get(key) or {}).get("device", "none")).lower()  # noqa: E731
        return f"DeepSpeed ZeRO-{stage}", stage, device("offload_optimizer") in ("cpu", "nvme"), \
            stage == 3 and device("offload_param") in ("cpu", "nvme")
    fsdp = plan.hf.get("fsdp")
    if fsdp:
        options = fsdp if isinstance(fsdp, list) else str(fsdp).replace(",", " ").split()
        options = [str(o).lower() for o in options]
        stage = 2 if "shard_grad_op" in options else 3
        offload = "offload" in options
        return f"FSDP ({'shard_grad_op' if stage == 2 else 'full_shard'})", stage, offload, offload and stage == 3
    return "", 0, False, False


def _activation_bytes_per_layer(facts: ModelFacts, half: int, full_upcast: bool, norm_trainable: bool,
                                 eager_seq: int) -> float:
    """Bytes autograd keeps per token for one Llama-style decoder layer (sdpa/flash attention):
    per RMSNorm its fp32 input, the inverse norm and (when its weight trains) the normalised input;
    the input of the projections (one copy per projection when autocast casts an fp32 input: full
    tuning in mixed precision); q, k, v, the attention output and its log-sum-exp; and the gated
    MLP's gate, activation, up and product (two widths for an ungated MLP)."""
    h, a = facts.hidden, half
    norm_weight = 4 if full_upcast else a
    norm = 4 * h + 4 + (norm_weight * h if norm_trainable else 0)
    casts = a == 2 and full_upcast
    inputs = a * h * ((3 if casts else 1) + (2 if casts else 1))
    attention = a * (2 * facts.q_dim + 2 * facts.kv_dim) + 4 * facts.heads
    if eager_seq:  # eager attention keeps the fp32 softmax and its half copy: heads x sequence per token
        attention += facts.heads * eager_seq * (4 + a)
    mlp = (4 if facts.gated_mlp else 2) * facts.intermediate * a
    return 2 * norm + inputs + attention + mlp


def _optimizer_bytes(plan: TrainPlan, facts: ModelFacts, param_bytes: int) -> tuple[float, list[str]]:
    """Bytes of optimizer state for the trainable parameters, by the optimizer the run builds."""
    train, notes = plan.train, []
    n = facts.trainable
    if train.use_galore or train.use_apollo:
        rank = train.galore_rank if train.use_galore else train.apollo_rank
        projected = sum(m * n_ for m, n_ in facts.projected)
        low_rank = sum(2 * rank * max(m, n_) * param_bytes + rank * min(m, n_) * param_bytes
                       for m, n_ in facts.projected)
        return low_rank + 2 * (n - projected) * param_bytes, notes
    if train.use_adam_mini:  # one first moment per weight; second moments per head or neuron (embeddings: full)
        return (n + facts.embedding_like) * 4, notes
    if train.use_muon:
        return (n + facts.embedding_like) * param_bytes, notes
    if train.use_badam:
        return 2 * n * 4 + (n * 4 if param_bytes == 2 else 0), notes
    optim = _optim_name(plan)
    states, size = OPTIMIZER_STATE.get(optim, (2, None))
    if optim not in OPTIMIZER_STATE:
        notes.append(f"optim {optim}: counted as two states per parameter")
    if size is not None and size < 4:  # bitsandbytes keeps tensors under 4096 elements in 32 bits, and the
        # Trainer registers embeddings for 32-bit state too
        full = facts.small_tensors + facts.embedding_trainable
        big = n - full
        return states * (big * size + big * 4 / 256) + states * full * 4, notes
    return states * n * (size or param_bytes), notes


def _quantized_bytes(plan: TrainPlan, facts: ModelFacts) -> float:
    """Bytes of the linear weights an on-the-fly quantiser replaces."""
    bits, method = plan.model.quantization_bit, plan.model.quantization_method
    total = 0.0
    for numel, rows in facts.quantized:
        if method == "bnb" and bits == 4:  # blocks of 64 with one absmax each (8-bit with double quantisation)
            per_block = 1 + 4 / 256 if plan.model.double_quantization else 4
            total += numel / 2 + numel / 64 * per_block
        elif method == "bnb":  # LLM.int8: one byte each and an fp32 scale per output row
            total += numel + 4 * rows
        else:  # hqq / eetq: bits per weight plus a scale and zero per group of 64
            total += numel * (bits or 8) / 8 + numel / 64 * 4
    return total


def estimate_plan(plan: TrainPlan, device: Device | None = None, gpus: int | None = None,
                  model_config: Any = None, facts: ModelFacts | None = None) -> Estimate:
    """The estimate of a checked plan (`lf_train.plan.check_train_config`). `model_config` replaces
    reading the model's config (the bench gives published architectures as dicts)."""
    from lf_train.stages import STAGES

    device = device or local_device()
    if not gpus:
        from lf_train.launch import planned_processes

        gpus = planned_processes()
    if gpus < 1:
        raise ConfigError(f"--gpus {gpus}: give at least 1.")
    stage = STAGES[plan.train.stage]
    config = model_config if model_config is not None else read_model_config(plan.model)
    if facts is None:
        facts = analyse_model(plan, config, value_head=stage.value_head)
    notes = list(facts.notes)
    precision, half = _precision(plan, device)
    mixed = half == 2 and not plan.model.pure_bf16
    param_bytes = 2 if plan.model.pure_bf16 else 4  # trainable parameters (and their gradients)
    load_bytes = half if (mixed or plan.model.pure_bf16) else 4

    # weights: frozen ones in the load dtype (or quantised), trainable ones in fp32 under mixed precision
    quantized = _quantized_bytes(plan, facts) if plan.model.quantization_bit else 0.0
    quantized_numel = sum(n for n, _ in facts.quantized) if plan.model.quantization_bit else 0
    frozen_plain = facts.total - facts.upcast - quantized_numel
    weights = frozen_plain * load_bytes + facts.upcast * param_bytes + quantized
    if quantized_numel and device.kind == "cpu":  # the checkpoint stays mapped: its pages read while quantising
        weights += quantized_numel * _checkpoint_bytes(config)  # count in the resident set (the kernel may drop them)
        notes.append("quantising on a CPU leaves the checkpoint's pages of the quantised layers resident")
    if mixed:
        weights += facts.trainable_linear * half  # autocast's half copies, kept for the backward pass
    gradients = float(facts.trainable * param_bytes)
    optimizer, optimizer_notes = _optimizer_bytes(plan, facts, param_bytes)
    notes += optimizer_notes
    if (plan.train.use_galore and plan.train.galore_layerwise) or (plan.train.use_apollo and plan.train.apollo_layerwise):
        gradients = float(facts.largest_tensor * param_bytes)  # each gradient is used and freed in its hook
        notes.append("layer-wise update: one gradient at a time")

    # sharding and offload
    sharded_by, stage_n, offload_optimizer, offload_params = _sharding(plan)
    host = 0.0
    if sharded_by:
        if sharded_by.startswith("DeepSpeed") and mixed:  # DeepSpeed holds half weights and an fp32 master copy
            weights = (facts.total - quantized_numel) * half + quantized
            gradients = float(facts.trainable * half)
            optimizer += facts.trainable * 4
        if stage_n >= 1:
            optimizer /= gpus
        if stage_n >= 2:
            gradients /= gpus
        working = 0.0
        if stage_n >= 3:
            weights /= gpus
            working = 2 * facts.largest_layer * half  # the gathered layer and the one prefetched
        if offload_optimizer:
            host += optimizer * gpus if stage_n >= 1 else optimizer
            optimizer = 0.0
        if offload_params:
            host += weights * gpus
            weights = 0.0
        weights += working
        notes.append(f"{sharded_by} over {gpus} device(s)" + (", optimizer offloaded" if offload_optimizer else "")
                     + (", parameters offloaded" if offload_params else ""))
    elif gpus > 1:
        notes.append(f"data parallel over {gpus} devices: each holds a whole copy (ZeRO-3 or FSDP would shard it)")

    # a second model: the frozen reference or a full reward model
    from lf_models.args import ADAPTER_TYPES

    adapters = plan.finetuning.finetuning_type in ADAPTER_TYPES
    if stage.needs_reference(plan.train):
        if plan.train.ref_model:
            ref = _other_model_bytes(plan.train.ref_model, plan.train.ref_model_quantization_bit, load_bytes, plan)
            weights += ref
            notes.append(f"reference model {plan.train.ref_model}: {_gib(ref)}")
        elif not adapters:
            weights += facts.total * load_bytes / (gpus if stage_n >= 3 else 1)
            notes.append("reference model: a frozen copy of the starting weights")
        else:
            notes.append("reference model: the adapter switched off (no second copy)")
    if plan.train.stage == "ppo" and plan.train.reward_model_type == "full" and plan.train.reward_model:
        weights += _other_model_bytes(plan.train.reward_model, None, load_bytes, plan)
        notes.append("reward model: a second model (reward_model_type full)")

    # activations and logits, per device
    seq = plan.data.cutoff_len
    batch = int(_hf(plan, "per_device_train_batch_size"))
    sequences = batch * (2 if plan.train.stage in ("rm", "dpo") else 1)  # chosen and rejected side by side
    generating = plan.train.stage in ("ppo", "grpo")  # sampled answers are trained on with their prompts
    if plan.train.stage == "ppo":
        seq += plan.train.max_new_tokens or 32
    elif generating:  # grpo: the batch counts completions (groups of num_generations per prompt)
        seq += int(getattr(plan.train, "max_completion_length", 512))
    tokens = sequences * seq
    full_upcast = mixed and facts.upcast >= facts.total * 0.5  # full tuning: fp32 norms and embeddings
    norm_trainable = facts.trainable > 0 and (plan.finetuning.finetuning_type in ("full", "freeze")
                                              or plan.train.use_badam)
    eager = seq if plan.model.flash_attn == "disabled" else 0
    per_layer = _activation_bytes_per_layer(facts, half, full_upcast, norm_trainable, eager)
    stream = 4 if (half == 4 or full_upcast) else half
    outside = 4 * facts.hidden + 4 + facts.hidden * (4 if full_upcast else half) * 2 + 16  # final norm, head input, ids
    # with gradient checkpointing `lf train` makes the embeddings' output require gradients (frozen
    # layers below a trained one would otherwise cut the checkpointed graph): the backward pass then
    # runs through every layer
    gc = bool(_hf(plan, "gradient_checkpointing"))
    activations_full = tokens * (per_layer * facts.layers_in_backward + outside)
    activations_gc = tokens * (stream * facts.hidden * facts.layers + per_layer + outside)
    layers_bp = facts.layers if gc else facts.layers_in_backward
    logits = tokens * facts.vocab * (12 + (half if half == 2 else 0))
    head = _fused_head(plan, device, facts)
    if head == "torch":  # torch's linear_cross_entropy: about 1.5 chunks of logits, the head's input and its gradient
        from lf_train.fused_head import chunk_rows

        logits = 3 * min(tokens, chunk_rows(facts.vocab)) * facts.vocab * 2 + tokens * facts.hidden * 12
    elif head and device.kind == "cpu":  # TRL's torch fallback keeps about nine tiles alive (LF narrows them)
        from lf_train.losses import CPU_FUSED_HEAD_CHUNK

        logits = 9 * min(tokens, 4096) * min(facts.vocab, CPU_FUSED_HEAD_CHUNK) * 4 + tokens * facts.hidden * 8
    elif head:  # Triton kernels: one projection tile of at most 4096 tokens x 32768 entries, a few floats per token
        logits = min(tokens, 4096) * min(facts.vocab, 32768) * half + tokens * 16
    if generating:  # sampling keeps a key/value cache; training takes over once the answers exist
        cache = 2 * facts.layers * facts.kv_dim * seq * sequences * half
        notes.append(f"{plan.train.stage} sampling: a key/value cache of {_gib(cache)} (less than the training "
                     "activations it precedes)")
    activations = activations_gc if gc else activations_full

    # the peak: the end of the forward pass (activations and logits alive; gradients of earlier
    # micro-batches too) or the end of the backward pass and the optimizer step (every gradient)
    accumulating = int(_hf(plan, "gradient_accumulation_steps")) > 1
    head_grad = facts.head_trainable * param_bytes / (gpus if stage_n >= 2 else 1)
    forward_end = activations + logits + (gradients if accumulating else head_grad)
    backward_end = gradients + tokens * per_layer * min(1, layers_bp)
    if device.kind == "cpu" and facts.tied_embeddings and facts.embedding_trainable and facts.head_trainable:
        # on a CPU the lookup's dense gradient meets the head's at the end of the backward pass: two
        # more vocabulary x hidden tensors for a moment (SmolLM2-135M: 0.21 GiB measured). The paper's
        # GPU numbers (Gemma-2B full, tied) leave no room for them there.
        backward_end += 2 * facts.embedding_trainable * param_bytes / (gpus if stage_n >= 2 else 1)
    overhead = device.overhead_gib * GIB
    if device.kind == "cpu" and facts.heap_tensors * load_bytes > 0.1 * GIB:
        notes.append(CPU_HEAP_NOTE)
    peak = weights + optimizer + max(forward_end, backward_end) + overhead

    # time: FLOPs per token over the device's peak at its utilisation
    attention_fwd = 2 * facts.layers * seq * facts.q_dim  # causal: half of the 4 x layers x seq x width
    forward = 2 * facts.matmul_per_token + attention_fwd
    share_bp = layers_bp / max(facts.layers, 1)
    backward = share_bp * forward + 2 * facts.trainable_matmul_per_token
    flops_token = forward + backward + (share_bp * forward if gc else 0)
    if stage.needs_reference(plan.train):
        flops_token += forward
    if generating:  # sampling, the reference and the reward model each take a forward pass per token
        flops_token = flops_token * (plan.train.ppo_epochs if plan.train.stage == "ppo" else 1) + 3 * forward
        notes.append("sampling is bound by memory bandwidth, not FLOPs: its time is underestimated")
    if plan.model.quantization_bit:
        notes.append("quantised weights are dequantised for every matmul: real throughput is lower")
    tokens_per_second = gpus * device.peak_tflops * 1e12 * device.utilisation / flops_token
    accumulation = int(_hf(plan, "gradient_accumulation_steps"))
    tokens_per_step = tokens * accumulation * gpus
    steps = _steps(plan, batch * accumulation * gpus)
    seconds = steps * tokens_per_step / tokens_per_second if steps else None

    result = Estimate(
        model=plan.model.model_name_or_path or "?", method=_method(plan, sharded_by), device=device, gpus=gpus,
        precision=precision, total_params=facts.total, trainable_params=facts.trainable,
        weights=weights, gradients=gradients, optimizer=optimizer, activations=activations,
        activations_checkpointed=activations_gc, activations_full=activations_full, logits=logits,
        overhead=overhead, gradient_checkpointing=gc, peak=peak, host=host, sequence_length=seq,
        sequences_per_device=sequences, tokens_per_step=tokens_per_step, flops_per_token=flops_token,
        tokens_per_second=tokens_per_second, steps=steps, seconds=seconds, notes=notes, facts=facts)
    return result


def _fused_head(plan: TrainPlan, device: Device, facts: ModelFacts) -> str | None:
    """The run's fused LM head, as `lf train` chooses it (lf_train.fused_head): TRL's in its dpo, kto and grpo
    trainers; for sft and pt TRL's on a GPU (the estimate assumes Triton) and torch's on a CPU, unless
    `fused_lm_head: false` or a loss that needs the logits."""
    from lf_train.args import FUSED_HEAD_STAGES

    train = plan.train
    if train.stage in ("dpo", "kto", "grpo"):
        return "trl"
    if train.stage not in FUSED_HEAD_STAGES or train.use_dft_loss or train.use_asft_loss or train.use_eaft_loss:
        return None
    if _hf(plan, "use_liger_kernel") or float(_hf(plan, "label_smoothing_factor") or 0) or train.fused_lm_head is False:
        return None
    if device.kind != "cpu":
        return "trl"
    sharded = bool(plan.hf.get("fsdp")) or _sharding(plan)[1] == 3  # TRL's head gathers a sharded one
    return "torch" if facts.torch_head and not sharded else ("trl" if train.fused_lm_head else None)


def _checkpoint_bytes(config: Any) -> int:
    """Bytes per weight in the checkpoint files (config.json's dtype)."""
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return 4 if "32" in dtype else 2


def _other_model_bytes(reference: str, bits: int | None, load_bytes: int, plan: TrainPlan) -> float:
    """Weights of a second, frozen model (ref_model, a full reward model), from its config."""
    import torch

    from lf_models.args import ModelArguments
    from lf_models.families import model_class_for

    args = ModelArguments(model_name_or_path=reference, trust_remote_code=plan.model.trust_remote_code)
    config = read_model_config(args)
    with torch.device("meta"):
        model = model_class_for(config).from_config(config)
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    if bits:
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                     and m is not model.get_output_embeddings())
        return (total - linear) * load_bytes + linear * (bits / 8 + 4 / 64)
    return total * load_bytes


def _method(plan: TrainPlan, sharded_by: str) -> str:
    ft, train, model = plan.finetuning, plan.train, plan.model
    if ft.finetuning_type == "lora":
        name = "DoRA" if ft.use_dora else "PiSSA" if ft.pissa_init else "LoRA"
        name = f"{name} r{ft.lora_rank}"
    elif ft.finetuning_type == "oft":
        name = f"OFT {'r' + str(ft.oft_rank) if ft.oft_rank else 'block ' + str(ft.oft_block_size)}"
    elif ft.finetuning_type == "freeze":
        name = f"freeze (train {ft.freeze_trainable_layers} layers)"
    else:
        name = "full"
    if model.quantization_bit:
        name = f"{model.quantization_bit}-bit {model.quantization_method} + {name}"
    for key, label in (("use_galore", f"GaLore r{train.galore_rank}"), ("use_apollo", f"APOLLO r{train.apollo_rank}"),
                       ("use_badam", "BAdam"), ("use_adam_mini", "Adam-mini"), ("use_muon", "Muon")):
        if getattr(train, key):
            name += f" + {label}"
    if "8bit" in _optim_name(plan):
        name += " + 8-bit optimizer"
    return f"{train.stage} {name}" + (f", {sharded_by}" if sharded_by else "")


def _steps(plan: TrainPlan, rows_per_step: int) -> int | None:
    """Optimizer steps of the run: max_steps, else epochs x rows / rows per step (packed data: the
    characters of the data files over about 4 characters per token, over cutoff_len)."""
    max_steps = int(_hf(plan, "max_steps"))
    if max_steps > 0:
        return max_steps
    rows = _dataset_rows(plan)
    if rows is None:
        return None
    epochs = float(_hf(plan, "num_train_epochs"))
    return max(1, math.ceil(rows / rows_per_step * epochs))


def _dataset_rows(plan: TrainPlan) -> int | None:
    from lf_data.dataset_info import get_dataset_attr

    data = plan.data
    from lf_train.plan import rows_packed

    packing = rows_packed(data, plan.train.stage)
    total = 0
    for name in data.dataset or []:
        attr = get_dataset_attr(name, data.dataset_dir)
        if attr.source != "file":
            return None
        path = Path(attr.location)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        if packing:
            chars = sum(p.stat().st_size for p in files)
            rows = max(1, math.ceil(chars / 4 / data.cutoff_len))
        else:
            counted = [_count_rows(p) for p in files]
            if any(c is None for c in counted):
                return None
            rows = sum(c for c in counted if c is not None)
        if attr.num_samples is not None:
            rows = attr.num_samples
        if data.max_samples is not None:
            rows = min(rows, data.max_samples)
        total += rows
    if data.val_size:
        total -= int(total * data.val_size) if data.val_size < 1 else int(data.val_size)
    return max(total, 0)


def _count_rows(path: Path) -> int | None:
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            loaded = json.loads(path.read_text(encoding="utf-8"))
            return len(loaded) if isinstance(loaded, list) else None
        if suffix in (".jsonl", ".txt"):
            with open(path, "rb") as handle:
                return sum(1 for line in handle if line.strip())
        if suffix == ".csv":
            with open(path, "rb") as handle:
                return max(0, sum(1 for _ in handle) - 1)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError, ImportError):
        return None
    return None


# -- what would make it fit --------------------------------------------------------------------------

def suggest(plan: TrainPlan, result: Estimate, config: Any) -> list[str]:
    """Changes of one or two keys that bring the peak under the device's memory, each with its peak."""
    from lf_models.args import ADAPTER_TYPES

    tries: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = []  # label, hf, model, finetuning
    batch = int(_hf(plan, "per_device_train_batch_size"))
    accumulation = int(_hf(plan, "gradient_accumulation_steps"))
    if not result.gradient_checkpointing:
        tries.append(("gradient_checkpointing=true", {"gradient_checkpointing": True}, {}, {}))
    if batch > 1:
        tries.append((f"per_device_train_batch_size=1 gradient_accumulation_steps={batch * accumulation}",
                      {"per_device_train_batch_size": 1, "gradient_accumulation_steps": batch * accumulation}, {}, {}))
    if not result.gradient_checkpointing and batch > 1:
        tries.append(("gradient_checkpointing=true per_device_train_batch_size=1",
                      {"gradient_checkpointing": True, "per_device_train_batch_size": 1,
                       "gradient_accumulation_steps": batch * accumulation}, {}, {}))
    if plan.model.quantization_bit is None and not plan.train.use_galore and not plan.train.use_badam:
        ft = {} if plan.finetuning.finetuning_type in ADAPTER_TYPES else {"finetuning_type": "lora"}
        label = ("finetuning_type=lora " if ft else "") + "quantization_bit=4"
        tries.append((label, {}, {"quantization_bit": 4}, ft))
    if result.gpus > 1 and _sharding(plan)[1] < 3:
        tries.append(("deepspeed=examples/deepspeed/ds_z3_config.json (ZeRO-3)",
                      {"deepspeed": {"zero_optimization": {"stage": 3}}}, {}, {}))
    if result.device.kind == "gpu" and not _sharding(plan)[2]:
        tries.append(("deepspeed=examples/deepspeed/ds_z3_offload_config.json (ZeRO-3 with CPU offload)",
                      {"deepspeed": {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                                           "offload_param": {"device": "cpu"}}}}, {}, {}))
    found = []
    for label, hf, model, finetuning in tries:
        changed = dataclasses.replace(plan, hf={**plan.hf, **hf}, training_args=None,
                                      model=dataclasses.replace(plan.model, **model),
                                      finetuning=dataclasses.replace(plan.finetuning, **finetuning))
        try:
            facts = result.facts if not (model or finetuning) else None
            other = estimate_plan(changed, result.device, result.gpus, model_config=config, facts=facts)
        except ConfigError:
            continue
        if other.fits:
            found.append(f"{label} ({_gib(other.peak)})")
    return found


def estimate(config: dict[str, Any], device: str | None = None, gpus: int | None = None,
             source: str = "") -> Estimate:
    """The estimate of a run config (the dict `lf train` reads): checked exactly as `lf train` checks
    it, nothing loaded. `device` names a device from `DEVICES` (default: this machine's)."""
    from lf_train.plan import check_train_config, finish_plan

    plan = check_train_config(config, source)
    chosen = find_device(device)
    if chosen.local:
        plan = finish_plan(plan)  # this machine's own checks (precision, FSDP), as lf train runs them
    model_config = read_model_config(plan.model)
    result = estimate_plan(plan, chosen, gpus, model_config=model_config)
    if not result.fits:
        result.suggestions = suggest(plan, result, model_config)
    return result
