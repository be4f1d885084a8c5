"""Every preference loss LF offers is TRL's own: on a fixed tiny model and batch, the loss of LF's dpo and
kto stages equals the loss TRL's own trainers compute (DPOTrainer, CPOTrainer, ORPOTrainer, KTOTrainer,
each built as a TRL user builds it, on TRL's collation of the same token ids) to 1e-5, and LF's names
are exactly TRL's. Then one `lf train` run per family LF did not have (several DPO losses weighted, KTO
without its KL term), and the names checked before anything loads."""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
import warnings

import pytest
import torch
from train_helpers import losses

from lf_data.cli import main as lf
from lf_train.args import DPO_LOSSES

BETA = 0.5
PAIRS = [  # answers of different lengths: the per-token normalisations (ipo, sigmoid_norm, ld_alpha, WPO) matter
    ("Who are you?", "I am Lumen, made by the LF team.", "I do not know."),
    ("What is two plus two?", "Four.", "Two plus two is five, I think."),
    ("Name a colour.", "Blue is a colour.", "No."),
    ("Who made you?", "The LF team made me.", "Nobody made me at all, I just appeared."),
]


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # TRL's trainers report their use otherwise


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Dozens of forwards of a tiny model: one thread is several times faster than two on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tiny_llama, tmp_path_factory):
    """LF's tokenised pairs and KTO rows, the tokenizer, a policy (the tiny Llama moved off by noise) and
    the reference (the tiny Llama)."""
    from transformers import AutoModelForCausalLM

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.args import ModelArguments
    from lf_models.loader import load_tokenizer

    folder = tmp_path_factory.mktemp("preference-data")
    (folder / "pairs.json").write_text(json.dumps(
        [{"instruction": q, "input": "", "chosen": c, "rejected": r} for q, c, r in PAIRS]))
    (folder / "answers.json").write_text(json.dumps(
        [{"instruction": q, "output": a, "good": good} for q, c, r in PAIRS for a, good in ((c, True), (r, False))]))
    (folder / "dataset_info.json").write_text(json.dumps({
        "pairs": {"file_name": "pairs.json", "ranking": True},
        "answers": {"file_name": "answers.json", "columns": {"kto_tag": "good"}}}))
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_llama)))

    def rows(name, stage):
        args = DataArguments(dataset=[name], dataset_dir=str(folder), template="chatml", cutoff_len=128)
        return list(build_dataset(args, tokenizer, stage).train_dataset)

    reference = AutoModelForCausalLM.from_pretrained(tiny_llama)
    policy = copy.deepcopy(reference)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return {"tokenizer": tokenizer, "pairs": rows("pairs", "dpo"), "answers": rows("answers", "kto"),
            "policy": policy, "reference": reference, "out": tmp_path_factory.mktemp("trainers")}


def split(ids, labels):
    """(prompt ids, answer ids) of one LF sequence, checking every token after the prompt is trained."""
    start = next(i for i, label in enumerate(labels) if label != -100)
    assert list(labels[start:]) == list(ids[start:])
    return list(ids[:start]), list(ids[start:])


def metrics_of(trainer) -> dict[str, float]:
    return {key: values[-1] for mode in ("train", "eval") for key, values in trainer._metrics[mode].items()}


def lf_loss(setup, trainer_class, collator_class, rows, reference=True, model=None, **keys):
    """LF's stage loss on `rows` (the policy, the reference or LoRA's adapter switched off) and its metrics."""
    from transformers import TrainingArguments

    from lf_train.args import TrainArguments

    stage = "kto" if collator_class.__name__ == "KTOCollator" else "dpo"
    collator = collator_class(setup["tokenizer"].pad_token_id)
    trainer = trainer_class(
        model=model if model is not None else copy.deepcopy(setup["policy"]),
        args=TrainingArguments(output_dir=str(setup["out"] / "lf"), report_to="none", use_cpu=True,
                               remove_unused_columns=False),
        data_collator=collator, processing_class=setup["tokenizer"],
        train_args=TrainArguments(stage=stage, pref_beta=BETA, **keys),
        reference=copy.deepcopy(setup["reference"]) if reference else None)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, collator(rows))
    return loss.item(), metrics_of(trainer)


def lf_dpo(setup, **keys):
    from lf_train.args import REFERENCE_FREE_LOSSES
    from lf_train.collators import PairwiseCollator
    from lf_train.stages.dpo import PreferenceTrainer

    free = keys.get("pref_loss") in REFERENCE_FREE_LOSSES
    return lf_loss(setup, PreferenceTrainer, PairwiseCollator, setup["pairs"], reference=not free, **keys)


def trl_dpo(setup, model=None, **config):
    """TRL's DPOTrainer as a TRL user builds it, its loss on TRL's collation of LF's token ids."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    tokenizer = setup["tokenizer"]
    trainer = DPOTrainer(
        model=model if model is not None else copy.deepcopy(setup["policy"]),
        ref_model=copy.deepcopy(setup["reference"]),
        args=DPOConfig(output_dir=str(setup["out"] / "trl"), report_to="none", use_cpu=True, bf16=False, beta=BETA,
                       activation_checkpointing=False, **config),
        train_dataset=Dataset.from_dict({"prompt": ["Hi"], "chosen": [" yes"], "rejected": [" no"]}),
        processing_class=tokenizer)
    examples = []
    for row in setup["pairs"]:
        prompt, chosen = split(row["chosen_input_ids"], row["chosen_labels"])
        prompt_again, rejected = split(row["rejected_input_ids"], row["rejected_labels"])
        assert prompt == prompt_again
        examples.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return loss.item(), metrics_of(trainer)


COMPARED = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
            "logps/rejected")

DPO_CASES = [  # (LF's keys, TRL's DPOConfig keys)
    *[({"pref_loss": name}, {"loss_type": [name]}) for name in DPO_LOSSES if name != "exo_pair"],
    ({"pref_loss": "exo_pair", "dpo_label_smoothing": 1e-3}, {"loss_type": ["exo_pair"], "label_smoothing": 1e-3}),
    ({"pref_loss": "robust", "dpo_label_smoothing": 0.2}, {"loss_type": ["robust"], "label_smoothing": 0.2}),
    ({"pref_loss": "aot", "dpo_label_smoothing": 0.2}, {"loss_type": ["aot"], "label_smoothing": 0.2}),
    ({"pref_loss": "discopop", "discopop_tau": 0.3}, {"loss_type": ["discopop"], "discopop_tau": 0.3}),
    ({"pref_losses": ["sigmoid", "bco_pair", "sft"], "pref_loss_weights": [0.8, 0.2, 1.0]},
     {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]}),
    ({"ld_alpha": 0.5}, {"ld_alpha": 0.5}),
    *[({"f_divergence_type": kind, "f_alpha_divergence_coef": 0.3}, {"f_divergence_type": kind,
                                                                    "f_alpha_divergence_coef": 0.3})
      for kind in ("forward_kl", "js_divergence", "alpha_divergence")],
    ({"pref_loss": "ipo", "use_weighting": True}, {"loss_type": ["ipo"], "use_weighting": True}),
]


def test_every_dpo_loss_equals_trls_own(setup):
    seen = set()
    for keys, config in DPO_CASES:
        ours, our_metrics = lf_dpo(setup, **keys)
        theirs, their_metrics = trl_dpo(setup, **config)
        assert ours == pytest.approx(theirs, abs=1e-5), (keys, ours, theirs)
        for key in (*COMPARED, "entropy", "logits/chosen", "mean_token_accuracy"):
            assert our_metrics[key] == pytest.approx(their_metrics[key], abs=1e-5), (keys, key)
        seen.add(round(ours, 4))
    assert len(seen) >= len(DPO_CASES) - 2, seen  # the cases differ: a loss that ignored its keys would show


def test_lf_names_are_trls_names():
    """A loss TRL adds (or drops) fails here until pref_loss offers it too."""
    from trl import DPOTrainer, KTOTrainer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.cpo import CPOTrainer

    from lf_train.args import TrainArguments

    assert set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(DPOTrainer._compute_loss))) == set(DPO_LOSSES)
    assert {"sigmoid", "simpo"} <= set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(CPOTrainer.cpo_loss)))
    kto = set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(KTOTrainer._compute_loss)))
    assert kto == set(typing_args(TrainArguments, "kto_loss"))


def typing_args(cls, name):
    from typing import get_args, get_type_hints

    return get_args(get_type_hints(cls)[name])


def hand_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean answer log-probabilities from the full logits (no TRL, no LF)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    token = logits.float().log_softmax(-1).gather(2, labels.clamp(min=0).unsqueeze(2)).squeeze(2) * mask
    return token.sum(-1), token.sum(-1) / mask.sum(-1)


def test_conservative_dpo_and_pref_ftx_keep_llamafactorys_meaning(setup):
    """LlamaFactory's sigmoid with dpo_label_smoothing (cDPO, which TRL 1.x dropped) as TRL's sigmoid and
    robust losses weighted, and pref_ftx, both against a hand computation from the full logits."""
    from lf_train.collators import PairwiseCollator

    batch = PairwiseCollator(setup["tokenizer"].pad_token_id)(setup["pairs"])
    policy, policy_mean = hand_logps(setup["policy"], batch)
    reference, _ = hand_logps(setup["reference"], batch)
    ratios = (policy - reference).chunk(2)
    margin = BETA * (ratios[0] - ratios[1])
    logsig = torch.nn.functional.logsigmoid
    eps = 0.1
    cdpo = (-(1 - eps) * logsig(margin) - eps * logsig(-margin)).mean().item()
    assert lf_dpo(setup, dpo_label_smoothing=eps)[0] == pytest.approx(cdpo, abs=1e-5)
    nll = -policy_mean.chunk(2)[0].mean().item()
    assert lf_dpo(setup, pref_ftx=0.5)[0] == pytest.approx(-logsig(margin).mean().item() + 0.5 * nll, abs=1e-5)
    assert lf_dpo(setup, pref_loss="simpo", pref_ftx=0.5)[0] == pytest.approx(
        lf_dpo(setup, pref_loss="simpo")[0] + 0.5 * nll, abs=1e-5)


def test_the_adapter_off_reference_equals_trl_with_the_base_as_ref_model(setup, monkeypatch):
    """LoRA with no reference loaded: LF switches the adapter off, which is the base model TRL is given;
    that reference's head computes the log-probabilities only, the policy's the metrics' fields too."""
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import _ChunkedLogProbFunction

    torch.manual_seed(1)
    adapter = get_peft_model(copy.deepcopy(setup["reference"]), LoraConfig(
        task_type="CAUSAL_LM", r=4, target_modules="all-linear", init_lora_weights=False))
    theirs, their_metrics = trl_dpo(setup, model=copy.deepcopy(adapter), loss_type=["sigmoid"])
    head, asked = _ChunkedLogProbFunction.forward, []

    def recording(ctx, *args):
        asked.append(args[-1])  # the fields this call computes
        return head(ctx, *args)

    monkeypatch.setattr(_ChunkedLogProbFunction, "forward", staticmethod(recording))
    ours, our_metrics = lf_loss(setup, *_dpo_classes(), setup["pairs"], reference=False, model=adapter)
    assert asked == [("log_probs",), ("log_probs", "entropy", "mean_logits", "is_top1")]  # reference, then policy
    assert ours == pytest.approx(theirs, abs=1e-5)
    for key in ("rewards/margins", "entropy", "logps/chosen", "logits/chosen", "mean_token_accuracy"):
        assert our_metrics[key] == pytest.approx(their_metrics[key], abs=1e-5), key
    assert abs(their_metrics["rewards/margins"]) > 1e-3  # the adapter moved the policy off the reference


def _dpo_classes():
    from lf_train.collators import PairwiseCollator
    from lf_train.stages.dpo import PreferenceTrainer

    return PreferenceTrainer, PairwiseCollator


def legacy_pairs(setup) -> dict:
    """LF's pairs as TRL's CPO and ORPO trainers collate them (prompt, prompt+answer ids and labels)."""
    from trl.experimental.utils import DPODataCollatorWithPadding

    features = []
    for row in setup["pairs"]:
        prompt, _ = split(row["chosen_input_ids"], row["chosen_labels"])
        feature = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for side in ("chosen", "rejected"):
            feature.update({f"{side}_{key}": list(row[f"{side}_{key}"])
                            for key in ("input_ids", "attention_mask", "labels")})
        features.append(feature)
    return DPODataCollatorWithPadding(pad_token_id=setup["tokenizer"].pad_token_id)(features)


def trl_reference_free(setup, trainer_class, config_class, **config):
    from datasets import Dataset

    trainer = trainer_class(
        model=copy.deepcopy(setup["policy"]),
        args=config_class(output_dir=str(setup["out"] / "trl-free"), report_to="none", use_cpu=True, bf16=False,
                          beta=BETA, remove_unused_columns=False, activation_checkpointing=False, **config),
        train_dataset=Dataset.from_dict({"prompt": ["Hi"], "chosen": [" yes"], "rejected": [" no"]}),
        processing_class=setup["tokenizer"])
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, legacy_pairs(setup))
    return loss.item(), metrics


def test_orpo_simpo_and_cpo_equal_trls_own(setup):
    with warnings.catch_warnings():  # TRL's notice that trl.experimental may change
        warnings.simplefilter("ignore")
        from trl.experimental.cpo import CPOConfig, CPOTrainer
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    for keys, config in [({"pref_loss": "simpo"}, {"loss_type": "simpo", "simpo_gamma": 0.5}),
                         ({"pref_loss": "simpo", "simpo_gamma": 1.0, "dpo_label_smoothing": 0.1},
                          {"loss_type": "simpo", "simpo_gamma": 1.0, "label_smoothing": 0.1}),
                         ({"pref_loss": "cpo"}, {"loss_type": "sigmoid"})]:
        ours, our_metrics = lf_dpo(setup, **keys)
        theirs, their_metrics = trl_reference_free(setup, CPOTrainer, CPOConfig, cpo_alpha=0.0, **config)
        assert ours == pytest.approx(theirs, abs=1e-5), keys  # TRL's BC term (cpo_alpha) is LF's pref_ftx
        for key in COMPARED:
            assert our_metrics[key] == pytest.approx(their_metrics[key], abs=1e-5), (keys, key)
    ours, our_metrics = lf_dpo(setup, pref_loss="orpo")
    theirs, their_metrics = trl_reference_free(setup, ORPOTrainer, ORPOConfig)
    # the odds-ratio term is TRL's; the NLL is LlamaFactory's (mean per chosen answer; TRL's also covers the prompt)
    assert ours - our_metrics["nll_loss"] == pytest.approx(theirs - their_metrics["nll_loss"], abs=1e-5)
    for key in (*COMPARED, "log_odds_ratio", "log_odds_chosen"):
        assert our_metrics[key] == pytest.approx(their_metrics[key], abs=1e-5), key


def trl_kto(setup, **config):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    tokenizer = setup["tokenizer"]
    trainer = KTOTrainer(
        model=copy.deepcopy(setup["policy"]), ref_model=copy.deepcopy(setup["reference"]),
        args=KTOConfig(output_dir=str(setup["out"] / "trl-kto"), report_to="none", use_cpu=True, bf16=False,
                       beta=BETA, train_sampling_strategy="sequential", activation_checkpointing=False, **config),
        train_dataset=Dataset.from_dict({"prompt": ["Hi", "Yo"], "completion": [" yes", " no"], "label": [True, False]}),
        processing_class=tokenizer)
    examples = []
    for row in setup["answers"]:
        prompt, answer = split(row["input_ids"], row["labels"])
        kl_prompt, kl_answer = split(row["kl_input_ids"], row["kl_labels"])
        assert kl_prompt == prompt  # LF's KL pair: the row's own prompt with another row's answer, as TRL's
        examples.append({"prompt_ids": prompt, "completion_ids": answer, "KL_completion_ids": kl_answer,
                         "label": bool(row["kto_tags"])})
    batch = DataCollatorForUnpairedPreference(pad_token_id=tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return loss.item(), metrics_of(trainer)


def test_kto_losses_equal_trls_own(setup):
    from lf_train.collators import KTOCollator
    from lf_train.stages.kto import KTOTrainer

    tags = [bool(row["kto_tags"]) for row in setup["answers"]]
    assert any(tags) and not all(tags)
    # policy and reference swapped: the KL estimate on the mismatched pairs is then above 0 (not clamped)
    setup = {**setup, "policy": setup["reference"], "reference": setup["policy"]}
    for keys, config in [({}, {}), ({"kto_rejected_weight": 2.0}, {"undesirable_weight": 2.0}),
                         ({"kto_loss": "apo_zero_unpaired"}, {"loss_type": "apo_zero_unpaired"})]:
        ours, our_metrics = lf_loss(setup, KTOTrainer, KTOCollator, setup["answers"], **keys)
        theirs, their_metrics = trl_kto(setup, **config)
        assert ours == pytest.approx(theirs, abs=1e-5), keys
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl"):
            if key in their_metrics:
                assert our_metrics[key] == pytest.approx(their_metrics[key], abs=1e-5), (keys, key)
        assert (our_metrics["kl"] > 0.01) == (keys.get("kto_loss") != "apo_zero_unpaired")  # no KL term: TRL logs 0


def test_weighted_dpo_losses_through_lf_train(base_config, write_config, more_data, tiny_llama):
    """A family LF did not have: several of TRL's losses weighted (MPO's sigmoid + bco_pair + sft)."""
    from train_helpers import log_records

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.args import ModelArguments
    from lf_models.loader import load_tokenizer

    base_config.update(stage="dpo", dataset="pref", pref_losses="sigmoid,bco_pair,sft",
                       pref_loss_weights=[0.8, 0.2, 1.0], max_steps=4, learning_rate=1e-2)
    assert lf(["train", str(write_config(**base_config))]) == 0
    records = [r for r in log_records(base_config["output_dir"]) if "loss" in r]
    # step 1, policy = reference (LoRA starts at zero): sigmoid is log 2, bco_pair 2 log 2, and sft the mean NLL
    # per chosen token; the pairs' chosen answers are one sentence, so that is -logps/chosen over its length
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_llama)))
    row = build_dataset(DataArguments(dataset=["pref"], dataset_dir=str(more_data), template="chatml"),
                        tokenizer, "dpo").train_dataset[0]
    answer_tokens = sum(label != -100 for label in row["chosen_labels"])
    first = records[0]
    expected = (0.8 + 0.2 * 2) * math.log(2) - first["logps/chosen"] / answer_tokens
    assert first["loss"] == pytest.approx(expected, abs=1e-4), (first, answer_tokens)
    assert all(math.isfinite(x) for x in losses(base_config["output_dir"]))
    assert records[-1]["rewards/margins"] > 0 and records[-1]["rewards/accuracies"] == 1.0, records[-1]


def test_kto_without_its_kl_term_through_lf_train(base_config, write_config, more_data):
    """apo_zero_unpaired: KTO's data, no KL pairs run (the loss starts at 0.5 per answer: policy = reference)."""
    base_config.update(stage="kto", dataset="kto", kto_loss="apo_zero_unpaired", max_steps=4, learning_rate=1e-2,
                       per_device_train_batch_size=8)
    assert lf(["train", str(write_config(**base_config))]) == 0
    from train_helpers import log_records

    records = [r for r in log_records(base_config["output_dir"]) if "loss" in r]
    assert records[0]["loss"] == pytest.approx(0.5, abs=1e-4) and records[0]["kl"] == 0
    assert records[-1]["rewards/margins"] > records[0]["rewards/margins"]


@pytest.mark.parametrize(("change", "message"), [
    ({"pref_loss": "sppo_hrd"}, "Did you mean 'sppo_hard'?"),
    ({"pref_losses": "sigmoid,apo_zro"}, "Did you mean 'apo_zero'?"),
    ({"kto_loss": "apo_zero", "stage": "kto", "dataset": "kto"}, "Did you mean 'apo_zero_unpaired'?"),
    ({"pref_losses": "sigmoid,bco_pair", "pref_loss_weights": [1.0]}, "give one weight per pref_losses entry"),
    ({"pref_loss": "exo_pair"}, "needs dpo_label_smoothing above 0"),
    ({"pref_loss": "hinge", "dpo_label_smoothing": 0.1}, "hinge takes none"),
    ({"pref_loss": "bco_pair", "f_divergence_type": "js_divergence"}, "f_divergence_type js_divergence works with"),
    ({"pref_loss": "orpo", "ld_alpha": 0.5}, "ld_alpha weighs"),
])
def test_bad_preference_keys_stop_before_anything_loads(change, message, base_config, write_config, more_data,
                                                        capsys):
    from pathlib import Path

    base_config.update({"stage": "dpo", "dataset": "pref", **change})
    assert lf(["train", str(write_config(**base_config))]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not Path(base_config["output_dir"]).exists()
