"""What several test folders build by hand on the tiny models: a saved LoRA adapter that changes the
logits, and the set of parameters a few optimizer steps change (import by name, as train_helpers)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_lora_adapter(base: Path, out: Path, random_b: bool = True) -> Path:
    """A peft LoRA adapter (rank 4, every linear layer) on `base`, saved with the base's tokenizer;
    with `random_b` its B matrices are random (seeded), so it changes the logits as a trained one does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    if random_b:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.2)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def two_steps(model) -> set[str]:
    """Names of the parameters that two AdamW steps changed (two: LoRA's A moves once B is non-zero)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
