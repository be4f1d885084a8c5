"""Which dtype to compute in: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    bf16: bool
    fp16: bool

    @property
    def load_dtype(self):  # -> torch.dtype
        import torch

        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32

    def describe(self) -> str:
        return "bf16 mixed precision" if self.bf16 else "fp16 mixed precision" if self.fp16 else "fp32"


def choose_precision(bf16: bool | None = None, fp16: bool | None = None) -> Precision:
    """Honour explicit choices; otherwise pick the best the device supports."""
    import torch

    from lf_data.errors import ConfigError

    if bf16 and fp16:
        raise ConfigError("bf16 and fp16 are both true; choose one.")
    on_gpu = torch.cuda.is_available()
    if bf16 or fp16:
        if not on_gpu:
            raise ConfigError(f"{'bf16' if bf16 else 'fp16'}: true needs a GPU; on CPU LF trains in fp32 "
                              "(remove the key).")
        if bf16 and not torch.cuda.is_bf16_supported():
            raise ConfigError("bf16: true but this GPU does not support bfloat16; use fp16: true.")
        return Precision(bf16=bool(bf16), fp16=bool(fp16))
    if bf16 is False and fp16 is False or not on_gpu:
        return Precision(bf16=False, fp16=False)
    if torch.cuda.is_bf16_supported():
        return Precision(bf16=True, fp16=False)
    return Precision(bf16=False, fp16=True)
