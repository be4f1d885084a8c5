"""stage grpo: the built-in rewards, the group-normalised advantages, TRL's GRPOTrainer through
`lf train` on the tiny Llama, and the configs refused before anything loads."""

import json
import math
import sys
from pathlib import Path

import pytest
import yaml
from train_helpers import log_records

from lf_data.cli import main as lf
from lf_data.errors import ConfigError
from lf_train.rewards import (
    REWARDS,
    accuracy,
    format_reward,
    group_advantages,
    json_reward,
    length_penalty,
    load_rewards,
)

ARITHMETIC = [{"instruction": f"What is {a} + {b}?", "input": "", "output": str(a + b)}
              for a, b in [(2, 3), (10, 7), (41, 1), (6, 6)]]


@pytest.fixture
def grpo_data(data_dir):
    (data_dir / "sums.json").write_text(json.dumps(ARITHMETIC))
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["sums"] = {"file_name": "sums.json"}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    return data_dir


@pytest.fixture
def grpo_config(base_config, grpo_data):
    base_config.update(stage="grpo", dataset="sums", reward_funcs=["accuracy", "format", "length"],
                       reward_weights=[1.0, 0.5, 0.1], num_generations=2, per_device_train_batch_size=2,
                       max_completion_length=4, max_steps=2, save_steps=1, beta=0.1, learning_rate=1e-3)
    return base_config


def test_accuracy_matches_numbers_boxed_and_hash_forms():
    completions = ["The answer is 1,234.", "so \\boxed{1234.0}", "<think>12</think> 1234", "#### 1234\n",
                   "1233", "no number", [{"role": "assistant", "content": "\\boxed{\\frac{1}{2}}"}], "0.5", "Paris."]
    solutions = ["1234", "#### 1,234", "\\boxed{1234}", "1234", "1234", "1234", "0.5", "1/2", "paris"]
    assert accuracy(completions, solution=solutions) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert accuracy(["5", "5"], solution=["", None]) == [None, None]  # no reference answer: not scored


def test_format_json_and_length_rewards_by_hand():
    assert format_reward(["<think>a+b</think> 5", "<think>x</think>", "5 <think>x</think> 5", "  <think>\n.\n</think>\n7"]) \
        == [1.0, 0.0, 0.0, 1.0]
    assert json_reward(['{"a": 1}', "```json\n[1, 2]\n```", "{a: 1}", "3"]) == [1.0, 1.0, 0.0, 1.0]
    assert length_penalty(["ab", "abcd", ""]) == [-0.5, -1.0, -0.0]
    assert length_penalty(["x", "y"], completion_ids=[[1, 2, 3], [1]]) == pytest.approx([-1.0, -1 / 3])
    assert set(REWARDS) == {"accuracy", "format", "json", "length"}


def test_group_advantages_by_hand():
    # group 1: mean 0.25, unbiased std 0.5; group 2: all equal, no signal; group 3: mean 1.5, std sqrt(0.5)
    rewards = [1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    s3 = math.sqrt(1 / 3)
    expected = [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0.0, 0.0, 0.0, 0.0,
                -0.5 / (s3 + 1e-4), 0.5 / (s3 + 1e-4), -0.5 / (s3 + 1e-4), 0.5 / (s3 + 1e-4)]
    assert group_advantages(rewards, 4) == pytest.approx(expected)
    assert group_advantages(rewards, 4, "none")[:4] == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_prompts_and_reference_answers_from_alpaca_and_sharegpt(data_dir, tiny_tokenizer):
    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_train.stages.grpo import to_trl_dataset

    def rows(name):
        data = DataArguments(dataset=[name], dataset_dir=str(data_dir), template="chatml", cutoff_len=256)
        return to_trl_dataset(build_dataset(data, tiny_tokenizer, "grpo").train_dataset, tiny_tokenizer)

    alpaca = rows("identity")[0]
    assert alpaca["prompt"] == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    assert alpaca["solution"] == "I am Lumen, made by the LF team."
    assert tiny_tokenizer.decode(alpaca["prompt_ids"]) == alpaca["prompt"]
    chats = rows("chats")  # the last assistant message is the reference; earlier turns are prompt
    assert chats["solution"] == ["The LF team.", "Paris."]
    assert "I am Lumen." in chats[0]["prompt"] and chats[0]["prompt"].endswith("<|im_start|>assistant\n")
    # a `solution` column holds the reference answer: beside a question (alpaca) or after a conversation
    # that ends with the user's turn (openai)
    (data_dir / "qa.json").write_text(json.dumps([{"question": "What is 2 + 3?", "answer": "5"}]))
    (data_dir / "qa_chat.json").write_text(json.dumps([{"messages": [{"role": "user", "content": "What is 6 x 7?"}],
                                                       "answer": "42"}]))
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["qa"] = {"file_name": "qa.json", "columns": {"prompt": "question", "solution": "answer"}}
    info["qa_chat"] = {"file_name": "qa_chat.json", "formatting": "openai",
                       "columns": {"messages": "messages", "solution": "answer"}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    (qa,), (qa_chat,) = rows("qa"), rows("qa_chat")
    assert (qa["solution"], qa_chat["solution"]) == ("5", "42")
    assert qa_chat["prompt"] == "<|im_start|>user\nWhat is 6 x 7?<|im_end|>\n<|im_start|>assistant\n"


def test_user_rewards_need_trust_remote_code(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def short(completions, **kw):\n    return [-len(c) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="set trust_remote_code: true"):
        load_rewards(["my_rewards:short"])
    (func,) = load_rewards(["my_rewards:short"], trust_remote_code=True)
    assert func(["ab", "c"]) == [-2, -1] and func.__name__ == "my_rewards.short"


RECORDED: list[tuple[list[str], list[float], list[str]]] = []


def recording_reward(completions, solution, **kwargs):
    """A user reward (loaded as module:function) that keeps what it saw."""
    scores = [float(len(c)) for c in completions]
    RECORDED.append((list(completions), scores, list(solution)))
    return scores


def test_grpo_through_lf_train(grpo_config, write_config, monkeypatch):
    from lf_train.stages import grpo

    seen_advantages = []
    original = grpo.LFGRPOTrainer._generate_and_score_completions

    def spy(self, inputs):
        out = original(self, inputs)
        seen_advantages.append(out["advantages"].tolist())
        for row, ids, mask in zip(inputs, out["prompt_ids"], out["prompt_mask"], strict=True):
            assert ids[mask.bool()].tolist() == row["prompt_ids"]  # generated from LF's own prompt ids
        return out

    monkeypatch.setattr(grpo.LFGRPOTrainer, "_generate_and_score_completions", spy)
    monkeypatch.setitem(sys.modules, "grpo_test_rewards", sys.modules[__name__])
    RECORDED.clear()
    grpo_config.update(reward_funcs=["accuracy", "grpo_test_rewards:recording_reward"], reward_weights=[1.0, 1.0],
                       trust_remote_code=True)
    assert lf(["train", str(write_config(**grpo_config))]) == 0
    out = Path(grpo_config["output_dir"])
    records = [r for r in log_records(out) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert {"rewards/mean", "rewards/accuracy/mean", "rewards/grpo_test_rewards.recording_reward/mean",
                "kl", "completions/mean_length", "completions/clipped_ratio"} <= set(r)
    assert records[0]["kl"] == 0.0  # the reference is the policy with its LoRA adapter off: equal at the start
    assert (out / "adapter_model.safetensors").is_file() and (out / "checkpoint-2").is_dir()
    assert not any(p.name.startswith(".") for p in out.iterdir() if p.is_dir())  # no staging folder left
    # each prompt's reference answer reached the reward, and TRL's advantages are the group-normalised sums
    assert len(RECORDED) == len(seen_advantages) == 2
    for (completions, scores, solutions), advantages in zip(RECORDED, seen_advantages, strict=True):
        assert solutions[0] == solutions[1] and solutions[0] in {row["output"] for row in ARITHMETIC}
        right = accuracy(completions, solution=solutions)
        total = [s + r for s, r in zip(scores, right, strict=True)]
        assert advantages == pytest.approx(group_advantages(total, 2), abs=1e-4)


@pytest.mark.parametrize(("change", "message"), [
    ({"reward_funcs": ["acuracy"]}, "unknown reward 'acuracy' (did you mean 'accuracy'?); known: accuracy, format"),
    ({"reward_funcs": ["my_module:score"], "reward_weights": None}, "set trust_remote_code: true"),
    ({"reward_weights": [1.0]}, "reward_weights has 1 value(s) for 3 reward_funcs"),
    ({"num_generations": 3}, "must be a multiple of it"),
    ({"reward_funcs": None, "reward_weights": None}, "stage grpo needs reward_funcs"),
    ({"epsilon_high": 0.1}, "cannot be below epsilon"),
    ({"loss_type": "ppo"}, "loss_type"),
    ({"stage": "sft"}, "scores the completions of stage grpo"),
])
def test_bad_grpo_configs_are_refused_before_loading(change, message, grpo_config, write_config, capsys):
    grpo_config.update(change)
    assert lf(["train", str(write_config(**grpo_config))]) == 1
    assert message in capsys.readouterr().err
    assert not Path(grpo_config["output_dir"]).exists()


def test_data_check_knows_grpo(grpo_config, tmp_path, capsys):
    run = tmp_path / "check.yaml"
    run.write_text(yaml.safe_dump({k: grpo_config[k] for k in ("model_name_or_path", "dataset", "dataset_dir",
                                                                 "template", "stage")}))
    assert lf(["data", "check", str(run)]) == 0
    out = capsys.readouterr().out
    assert "stage grpo" in out and "What is 2 + 3?" in out  # the prompts TRL generates from


def distinct_characters(completions, **kwargs):
    """A reward that tells the tiny model's random completions apart (user rewards are module:function)."""
    return [float(len(set(text))) for text in completions]


def broken_reward(completions, **kwargs):
    return [1.0 / 0.0 for _ in completions]


def short_reward(completions, **kwargs):
    return [1.0]


@pytest.mark.parametrize(("function", "message"), [
    ("broken_reward", "reward 'grpo_test_rewards:broken_reward' raised ZeroDivisionError: float division by zero "
                      "(on the completions of prompt '"),
    ("short_reward", "reward 'grpo_test_rewards:short_reward' returned 1 value(s) for 2 completions"),
])
def test_a_failing_reward_stops_the_run_naming_it(function, message, grpo_config, write_config, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "grpo_test_rewards", sys.modules[__name__])
    grpo_config.update(reward_funcs=[f"grpo_test_rewards:{function}"], reward_weights=None, trust_remote_code=True)
    assert lf(["train", str(write_config(**grpo_config))]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    out = Path(grpo_config["output_dir"])
    assert not list(out.glob("checkpoint-*")) and not (out / "adapter_model.safetensors").exists()


def test_grpo_resumes_to_the_same_losses_rewards_and_adapter(grpo_config, write_config, tmp_path, monkeypatch):
    """Killed after checkpoint-2, the run resumes with the sampling RNG of that step: the same
    completions, rewards, losses and final adapter as the run that was never interrupted."""
    import torch
    from safetensors.torch import load_file
    from train_helpers import crash_after

    monkeypatch.setitem(sys.modules, "grpo_test_rewards", sys.modules[__name__])
    grpo_config.update(max_steps=4, save_steps=2, max_completion_length=6, trust_remote_code=True,
                       reward_funcs=["grpo_test_rewards:distinct_characters"], reward_weights=None)
    config = write_config(**grpo_config)
    out = Path(grpo_config["output_dir"])
    assert lf(["train", str(config)]) == 0
    crashed = crash_after(out, 2, tmp_path / "crashed")
    assert lf(["train", str(config), f"output_dir={crashed}"]) == 0

    def steps(folder):
        return {r["step"]: (r["loss"], r["rewards/mean"], r["kl"]) for r in log_records(folder) if "loss" in r}

    # the resumed run cut the copied log back to step 2 and wrote steps 3 and 4 itself
    assert [r["step"] for r in log_records(crashed) if "loss" in r] == [1, 2, 3, 4]
    assert list(steps(out)) == [1, 2, 3, 4] and steps(crashed) == steps(out)
    assert len({rewards for _, rewards, _ in steps(out).values()}) > 1  # the steps sampled different completions
    straight, resumed = load_file(out / "adapter_model.safetensors"), load_file(crashed / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], rtol=1e-4, atol=1e-6)


def test_grpo_runs_in_two_gloo_processes(grpo_config, write_config):
    """NPROC_PER_NODE=2: each process generates for its share of the prompts; TRL gathers the rewards
    of a prompt's whole group before normalising, and the main process alone writes the run's files."""
    import os
    import subprocess

    out = Path(grpo_config["output_dir"])
    grpo_config.update(per_device_train_batch_size=1, max_steps=2, save_steps=2)  # 2 x 1 = one group of 2
    proc = subprocess.run([sys.executable, "-m", "lf_data.cli", "train", str(write_config(**grpo_config))],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "NPROC_PER_NODE": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "torch.distributed.run" in proc.stderr
    records = [r for r in log_records(out) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2]  # logged once, by the main process
    assert records[0]["kl"] == 0.0 and all("rewards/accuracy/mean" in r for r in records)
    assert (out / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]


def test_vllm_keys_reach_trls_config_and_need_a_gpu(grpo_config, write_config, monkeypatch, capsys):
    import importlib.util

    import lf_train.plan
    from lf_train.plan import check_train_config, finish_plan
    from lf_train.stages.grpo import grpo_config as trl_config

    vllm = {"use_vllm": True, "vllm_mode": "server", "vllm_server_host": "10.0.0.2", "vllm_server_port": 8010,
            "vllm_gpu_memory_utilization": 0.5}
    find_spec, installed = importlib.util.find_spec, {"vllm": True}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (installed[name] or None) if name in installed else find_spec(name, *a))
    monkeypatch.setattr(lf_train.plan, "_has_cuda", lambda: True)  # a GPU machine with vLLM installed
    config = trl_config(finish_plan(check_train_config({**grpo_config, **vllm})))
    assert (config.use_vllm, config.vllm_mode, config.vllm_server_host, config.vllm_server_port,
            config.vllm_gpu_memory_utilization) == (True, "server", "10.0.0.2", 8010, 0.5)
    grpo_config.update(vllm)
    monkeypatch.setattr(lf_train.plan, "_has_cuda", lambda: False)
    assert lf(["train", str(write_config(**grpo_config))]) == 1
    assert "use_vllm: vLLM generates on CUDA GPUs and this machine has none" in capsys.readouterr().err
    monkeypatch.setattr(lf_train.plan, "_has_cuda", lambda: True)
    installed["vllm"] = False
    assert lf(["train", str(write_config(**grpo_config))]) == 1
    assert "pip install 'lf-train[vllm]'" in capsys.readouterr().err
    assert not Path(grpo_config["output_dir"]).exists()
    grpo_config.update(stage="sft", reward_funcs=None, reward_weights=None)
    assert lf(["train", str(write_config(**grpo_config))]) == 1
    assert "use_vllm generates the completions of stage grpo" in capsys.readouterr().err


def test_grpo_scores_with_the_rm_adapter_on_the_policys_own_base(grpo_config, write_config, reward_adapter,
                                                                   tiny_llama, monkeypatch):
    """reward_funcs: [reward_model] with an rm run's LoRA adapter: loaded beside the policy's adapter on
    the one base model, switched in to score prompt + completion at the last token with the rm's value
    head -- the same scores plain peft gives -- and never saved with the policy."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lf_train import reward_models

    seen = []
    score = reward_models.RewardAdapter.reward

    def recording(self, ids, mask):
        scores = score(self, ids, mask)
        seen.append((ids.clone(), mask.clone(), scores.clone(), type(self.peft).__name__))
        return scores

    monkeypatch.setattr(reward_models.RewardAdapter, "reward", recording)
    grpo_config.update(reward_funcs=["accuracy", "reward_model"], reward_weights=[1.0, 0.5],
                       reward_model=str(reward_adapter), reward_model_type="lora")
    assert lf(["train", str(write_config(**grpo_config))]) == 0
    out = Path(grpo_config["output_dir"])
    assert len(seen) == 2 and {kind for *_, kind in seen} == {"PeftModelForCausalLM"}  # the policy's own model
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), reward_adapter).eval()
    head = load_file(reward_adapter / "value_head.safetensors")
    records = {r["step"]: r for r in log_records(out) if "loss" in r}
    for step, (ids, mask, scores, _) in enumerate(seen, start=1):
        with torch.no_grad():
            hidden = plain(input_ids=ids, attention_mask=mask, position_ids=reward_models.positions(mask),
                           output_hidden_states=True).hidden_states[-1]
        expected = hidden[torch.arange(len(ids)), reward_models.last_real_token(mask)] @ head["weight"][0] + \
            head["bias"][0]
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
        assert records[step]["rewards/reward_model/mean"] == pytest.approx(scores.mean().item(), abs=1e-5)
    # only the policy's adapter is saved; the rm adapter stays where it was
    assert not (out / "reward").exists() and not (out / "checkpoint-2" / "reward").exists()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == grpo_config.get("lora_rank", 8)


@pytest.mark.parametrize(("change", "message"), [
    ({"reward_funcs": ["reward_model"], "reward_weights": None}, "reward_funcs: reward_model scores with a reward model"),
    ({"reward_model": "RM"}, "add reward_model to reward_funcs"),
    ({"reward_funcs": ["reward_model"], "reward_weights": None, "reward_model": "RM", "finetuning_type": "full"},
     "reward_model_type: lora loads the rm adapter beside the policy's"),
])
def test_reward_model_keys_are_checked_before_loading(change, message, grpo_config, write_config, reward_adapter,
                                                      capsys):
    grpo_config.update({key: str(reward_adapter) if value == "RM" else value for key, value in change.items()})
    assert lf(["train", str(write_config(**grpo_config))]) == 1
    assert message in capsys.readouterr().err
