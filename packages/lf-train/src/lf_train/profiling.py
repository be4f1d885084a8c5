"""`enable_torch_profiler`: a torch.profiler trace of a few training steps (LlamaFactory's keys).

The section is torch-free (the config check imports no torch); the callback imports torch.profiler
only when a run asks for it. The trace is written for TensorBoard's profiler plugin and Perfetto
(`profiler_output_dir`, default output_dir/profiler).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from lf_data.config import AtLeastOne, NonNegative, section

logger = logging.getLogger(__name__)


@section
class ProfilerArguments:
    enable_torch_profiler: bool = False
    """Record a torch.profiler trace of the first steps (CPU and GPU operators, memory, shapes)."""
    profiler_output_dir: str | None = None
    """Folder of the trace files (default: output_dir/profiler)."""
    profiler_wait_steps: Annotated[int, NonNegative] = 1
    """Profiler schedule: steps skipped before warm-up."""
    profiler_warmup_steps: Annotated[int, NonNegative] = 1
    """Profiler schedule: steps recorded but discarded (warm-up)."""
    profiler_active_steps: Annotated[int, AtLeastOne] = 1
    """Profiler schedule: steps recorded."""
    profiler_repeat: Annotated[int, NonNegative] = 1
    """Profiler schedule: how many wait/warm-up/active cycles (0: until training ends)."""
    profiler_record_shapes: bool = True
    """Record the input shapes of each operator."""
    profiler_profile_memory: bool = True
    """Record tensor memory allocation and release."""
    profiler_with_stack: bool = True
    """Record the Python stack of each operator (larger traces)."""
    profile_modules: list[str] | None = None
    """Also label the forward pass of modules whose name contains one of these (for example self_attn,mlp)."""


def profiler_callback(args: ProfilerArguments, output_dir: str) -> Any:
    """A TrainerCallback stepping a torch.profiler.profile once per optimizer step."""
    import torch
    from transformers import TrainerCallback

    folder = Path(args.profiler_output_dir or Path(output_dir) / "profiler")

    class ProfilerCallback(TrainerCallback):
        def __init__(self) -> None:
            self.profiler: Any = None
            self.hooks: list[Any] = []

        def on_train_begin(self, train_args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(
                activities=activities,
                schedule=torch.profiler.schedule(wait=args.profiler_wait_steps, warmup=args.profiler_warmup_steps,
                                                 active=args.profiler_active_steps, repeat=args.profiler_repeat),
                on_trace_ready=torch.profiler.tensorboard_trace_handler(str(folder)),
                record_shapes=args.profiler_record_shapes, profile_memory=args.profiler_profile_memory,
                with_stack=args.profiler_with_stack)
            if args.profile_modules and model is not None:
                self._label_modules(model)
            self.profiler.start()
            logger.info("torch profiler: traces go to %s", folder)

        def _label_modules(self, model: Any) -> None:
            for name, module in model.named_modules():
                if any(part in name for part in args.profile_modules or []):
                    ranges: list[Any] = []

                    def enter(_module: Any, _inputs: Any, label: str = name, stack: list = ranges) -> None:
                        stack.append(torch.autograd.profiler.record_function(label).__enter__())

                    def leave(_module: Any, _inputs: Any, _output: Any, stack: list = ranges) -> None:
                        if stack:
                            stack.pop().__exit__(None, None, None)

                    self.hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]

        def on_step_end(self, *_: Any, **__: Any) -> None:
            if self.profiler is not None:
                self.profiler.step()

        def on_train_end(self, *_: Any, **__: Any) -> None:
            if self.profiler is not None:
                self.profiler.stop()
                self.profiler = None
            for hook in self.hooks:
                hook.remove()

    return ProfilerCallback()
