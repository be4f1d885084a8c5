"""stage ppo: PPO's arithmetic by hand, model sharing (one copy of the base weights), the Trainer it runs
on (gradient accumulation, warm-up, trainer_log.jsonl, exact resume from a checkpoint taken inside a
rollout), two gloo processes, the other reward sources, the adaptive KL coefficient (ppo_target, as
LlamaFactory runs TRL 0.9's), and the configs refused."""

import gc
import json
import math
from pathlib import Path

import pytest
import torch
from train_helpers import crash_after, log_records, step_losses

from lf_data.cli import main as lf
from lf_train.stages.ppo import (
    RolloutSampler,
    RunningMoments,
    adaptive_kl_coef,
    gae,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)


def test_gae_and_returns_by_hand():
    rewards = torch.tensor([[0.5, -1.0, 2.0], [1.0, 3.0, 7.0]])
    values = torch.tensor([[0.2, 0.4, -0.3], [0.5, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2's last token is padding: ignored
    gamma, lam = 0.9, 0.8
    a2 = 2.0 + 0.0 - (-0.3)  # the last token: no next value
    a1 = (-1.0 + gamma * -0.3 - 0.4) + gamma * lam * a2
    a0 = (0.5 + gamma * 0.4 - 0.2) + gamma * lam * a1
    b1 = 3.0 + 0.0 - 1.0
    b0 = (1.0 + gamma * 1.0 - 0.5) + gamma * lam * b1
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor([[a0, a1, a2], [b0, b1, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[a0 + 0.2, a1 + 0.4, a2 - 0.3], [b0 + 0.5, b1 + 1.0, 0.0]]))
    # gamma = lam = 1: each advantage is the sum of the rewards still to come minus the value now
    advantages, _ = gae(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(advantages[0], torch.tensor([1.5 - 0.2, 1.0 - 0.4, 2.0 + 0.3]))


def test_rewards_whitening_and_score_statistics_by_hand():
    logps, ref = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -2.0, -2.0]])
    rewards, kl = token_rewards(torch.tensor([2.0]), logps, ref, torch.tensor([[1.0, 1.0, 0.0]]), kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 2.0, 0.0]]))  # the score lands on the last answer token

    values, mask = torch.tensor([[1.0, 3.0], [5.0, 100.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # mean 3, unbiased variance (4 + 0 + 4) / 2 = 4: std 2
    torch.testing.assert_close(masked_whiten(values, mask)[mask.bool()], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(masked_whiten(values, mask, shift_mean=False)[mask.bool()], torch.tensor([2.0, 3.0, 4.0]))

    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 2.0, 3.0]))
    moments.update(torch.tensor([4.0, 10.0]))
    assert (moments.mean, moments.std, moments.count) == pytest.approx((4.0, math.sqrt(50 / 4), 5))
    torch.testing.assert_close(moments.normalise(torch.tensor([4.0, 10.0])),
                               torch.tensor([0.0, 6 / (math.sqrt(12.5) + 1.1920929e-07)]))


def test_clipped_losses_by_hand():
    logps, old = torch.tensor([[0.0, -1.0, -2.0, 5.0]]), torch.tensor([[-0.5, -1.0, -1.0, 0.0]])
    advantages, mask = torch.tensor([[1.0, -2.0, 3.0, 9.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, clipfrac = policy_loss(logps, old, advantages, mask, cliprange=0.2)
    # ratio e^0.5 > 1.2 with a positive advantage: clipped to 1.2; ratio 1: -A; ratio e^-1 < 0.8, A > 0: unclipped
    expected = (-1.0 * 1.2 + 2.0 - 3.0 * math.exp(-1.0)) / 3
    assert (loss.item(), clipfrac.item()) == pytest.approx((expected, 1 / 3))

    values, old_values = torch.tensor([[1.0, 0.0, 2.0, 7.0]]), torch.tensor([[0.5, 0.5, 2.1, 0.0]])
    returns = torch.tensor([[2.0, 0.2, 0.0, 0.0]])
    loss, clipfrac = value_loss(values, old_values, returns, mask, cliprange_value=0.2)
    # clipped values 0.7, 0.3, 2.0: squared errors max(1, 1.69), max(0.04, 0.01), max(4, 4)
    assert (loss.item(), clipfrac.item()) == pytest.approx((0.5 * (1.69 + 0.04 + 4.0) / 3, 1 / 3))


def test_adaptive_kl_coefficient_by_hand():
    # TRL 0.9 (Ziegler et al. 2019): error = clip(kl / target - 1, -0.2, 0.2); coef *= 1 + error x n / horizon
    assert adaptive_kl_coef(0.2, 6.6, 6.0, 64, 10000) == pytest.approx(0.2 * (1 + 0.1 * 64 / 10000), rel=1e-12)
    assert adaptive_kl_coef(0.2, 4.8, 6.0, 64, 10000) == pytest.approx(0.2 * (1 - 0.2 * 64 / 10000), rel=1e-12)
    assert adaptive_kl_coef(0.2, 30.0, 6.0, 64, 10000) == pytest.approx(0.2 * (1 + 0.2 * 64 / 10000), rel=1e-12)
    assert adaptive_kl_coef(0.2, 0.0, 6.0, 64, 10000) == pytest.approx(0.2 * (1 - 0.2 * 64 / 10000), rel=1e-12)
    assert adaptive_kl_coef(0.2, -3.0, 6.0, 64, 10000) == pytest.approx(0.2 * (1 - 0.2 * 64 / 10000), rel=1e-12)
    assert adaptive_kl_coef(0.2, 6.0, 6.0, 64, 10000) == 0.2  # on target: unchanged
    assert adaptive_kl_coef(0.05, 1.5, 1.0, 8, 4) == pytest.approx(0.05 * 1.4)  # upper bound, n = 2 x horizon
    assert adaptive_kl_coef(0.05, 0.9, 1.0, 8, 4) == pytest.approx(0.05 * 0.8)  # error -0.1, unclipped


def ppo_settings(config):
    from lf_train.plan import check_train_config
    from lf_train.stages.ppo import PPOSettings

    return PPOSettings.from_plan(check_train_config(config))


def test_llamafactory_ppo_target_turns_on_its_adaptive_controller(reward_adapter, base_config, more_data):
    """LlamaFactory's ppo_target is LF's key: the adaptive controller from TRL 0.9's start (0.2) and horizon
    (10000), as LlamaFactory ran it; without it LF's fixed 0.05; ppo_kl_coef sets the start either way."""
    from lf_data.llamafactory_keys import KEYS, translate_for
    from lf_serve.args import GeneratingArguments
    from lf_train.args import TrainArguments

    assert KEYS["ppo_target"].kind == "lf" and KEYS["ppo_target"].default == 6.0
    assert translate_for("train", {"ppo_target": 6.0}, TrainArguments) == {"ppo_target": 6.0}
    assert translate_for("chat", {"ppo_target": 6.0}, GeneratingArguments) == {}  # LlamaFactory's chat ignores it
    recipe = {**base_config, "stage": "ppo", "reward_model": str(reward_adapter)}
    adaptive = ppo_settings({**recipe, "ppo_target": 6.0})
    assert (adaptive.kl_coef, adaptive.kl_target, adaptive.kl_horizon) == (0.2, 6.0, 10000)
    fixed = ppo_settings(recipe)
    assert (fixed.kl_coef, fixed.kl_target) == (0.05, None)
    own = ppo_settings({**recipe, "ppo_target": 1.5, "ppo_kl_coef": 0.1, "ppo_kl_horizon": 500})
    assert (own.kl_coef, own.kl_target, own.kl_horizon) == (0.1, 1.5, 500)
    assert ppo_settings({**recipe, "ppo_kl_coef": 0.0}).kl_coef == 0.0


def test_rollout_sampler_repeats_each_block_for_its_micro_batches():
    sampler = RolloutSampler(size=5, block=4, repeats=3, shuffle=False, seed=0)
    assert list(sampler) == [0, 1, 2, 3] * 3 + [4, 0, 1, 2] * 3  # the order wraps to fill the last block
    assert len(sampler) == 24
    shuffled = RolloutSampler(size=8, block=4, repeats=2, shuffle=True, seed=0)
    first = list(shuffled)
    assert sorted(first[:4] + first[8:12]) == list(range(8)) and first[:4] == first[4:8]
    assert list(shuffled) == first  # the same epoch: the same order (resume skips into it)
    shuffled.set_epoch(1)
    assert list(shuffled) != first


def test_ppo_shares_one_base_model_and_scores_with_the_reward_adapter(reward_adapter, tiny_llama, more_data):
    from lf_models.args import FinetuningArguments, ModelArguments
    from lf_models.loader import load_model
    from lf_models.precision import choose_precision
    from lf_train.reward_models import left_pad
    from lf_train.stages.ppo import SharedRLHFModel
    from lf_train.stages.rm import last_token_values

    model = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), FinetuningArguments(), choose_precision(),
                       True, add_value_head=True)
    shared = SharedRLHFModel(model, str(reward_adapter))
    assert set(shared.peft.peft_config) == {"default", "reward"}
    base = [p for n, p in shared.peft.named_parameters() if "lora_" not in n]
    plain = load_model(ModelArguments(model_name_or_path=str(tiny_llama)), FinetuningArguments(finetuning_type="full"),
                       choose_precision(), False)
    assert sum(p.numel() for p in base) == sum(p.numel() for p in plain.parameters())  # one copy of the weights
    assert len({p.data_ptr() for p in base}) == len(base)
    trainable = {n for n, p in shared.model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n or n.startswith("v_head.") for n in trainable)

    ids, mask = left_pad([[5, 6, 7, 8], [9, 10]], pad_id=0)
    rm = load_model(ModelArguments(model_name_or_path=str(tiny_llama), adapter_name_or_path=[str(reward_adapter)]),
                    FinetuningArguments(), choose_precision(), False, add_value_head=True)
    right_ids, right_mask = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        expected = last_token_values(rm(right_ids, right_mask)[1], right_mask)
    torch.testing.assert_close(shared.reward(ids, mask), expected, atol=1e-4, rtol=1e-4)
    assert all(not p.requires_grad for n, p in shared.peft.named_parameters() if ".reward." in n)


TARGET = 0.23  # near the second rollout's KL (0.227): its update is not clipped
PPO_RUN = {"stage": "ppo", "max_steps": 6, "save_steps": 3, "per_device_train_batch_size": 2,
           "gradient_accumulation_steps": 2, "ppo_epochs": 2, "warmup_steps": 2, "max_new_tokens": 6,
           "learning_rate": 1e-2, "gamma": 0.99, "lam": 0.9, "cliprange": 0.1, "cliprange_value": 0.5,
           "vf_coef": 0.2, "ppo_score_norm": True, "ppo_whiten_rewards": True, "ppo_target": TARGET,
           "ppo_kl_horizon": 8}
"""8 prompts, rollouts of 2 x 2 prompts each trained for 2 epochs of 2 micro-batches: a rollout every
2 optimizer steps, an epoch of data every 4; checkpoint-3 falls inside the second rollout. The KL
coefficient adapts (from 0.2) by half its clipped error per rollout: 4 sequences, horizon 8."""


def ppo_metrics(output_dir, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in log_records(output_dir) if key in r}


def next_kl_coef(coef: float, kl: float, target: float, n_steps: int, horizon: int) -> float:
    """TRL 0.9's update, written out again from the logged values."""
    return coef * (1 + max(-0.2, min(0.2, kl / target - 1)) * n_steps / horizon)


def test_ppo_on_the_trainer_with_accumulation_warmup_and_exact_resume(reward_adapter, base_config, write_config,
                                                                      more_data, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file
    from transformers import PreTrainedModel

    from lf_train.stages import ppo

    before = {id(o) for o in gc.get_objects() if issubclass(type(o), PreTrainedModel)}
    seen = {}
    original = ppo.train_and_save

    def spy(trainer, plan, data):
        gc.collect()
        created = [o for o in gc.get_objects() if issubclass(type(o), PreTrainedModel) and id(o) not in before]
        inside = {id(module) for module in trainer.model.modules()}
        seen["outside"] = [type(o).__name__ for o in created if id(o) not in inside]
        seen["models"] = created
        seen["scorer_is_shared"] = trainer.scorer is trainer.shared and trainer.shared.model is trainer.model
        return original(trainer, plan, data)

    monkeypatch.setattr(ppo, "train_and_save", spy)
    base_config.update(PPO_RUN, reward_model=str(reward_adapter))
    config = write_config(**base_config)
    assert lf(["train", str(config)]) == 0
    out = Path(base_config["output_dir"])
    # policy, reference and reward are one model: every model the run created is a part of the trained one
    assert seen["models"] and seen["outside"] == [] and seen["scorer_is_shared"]

    records = [r for r in log_records(out) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for r in records:
        assert {"rewards/mean", "rewards/std", "kl", "learning_rate", "grad_norm", "ppo/policy_loss",
                "ppo/value_loss", "ppo/clipfrac", "ppo/approx_kl", "ppo/response_length"} <= set(r), r
    # linear warm-up over 2 steps, then linear decay to 0 at step 6 (the rate each step trained with)
    lr = base_config["learning_rate"]
    assert [r["learning_rate"] for r in records] == pytest.approx([0.0, lr / 2, lr, lr * 3 / 4, lr / 2, lr / 4])
    # the first rollout samples from the starting policy, whose LoRA adapter is zero: the reference (the
    # adapter switched off) gives the same log-probabilities, and the first update starts at ratio 1
    assert records[0]["kl"] == records[1]["kl"] == 0.0
    assert records[0]["ppo/approx_kl"] == 0.0 and records[0]["ppo/clipfrac"] == 0.0
    assert records[4]["kl"] != 0.0  # the third rollout comes from a trained policy
    assert records[0]["rewards/mean"] == records[1]["rewards/mean"] != records[2]["rewards/mean"]
    # the adaptive KL coefficient: 0.2 for the first rollout, then moved by each rollout's KL (all logged)
    coef, kl = ppo_metrics(out, "ppo/kl_coef"), ppo_metrics(out, "kl")
    assert coef[1] == coef[2] == 0.2 and coef[3] == coef[4] == pytest.approx(0.2 * 0.9)  # KL 0: -0.2 x 4 / 8
    assert abs(kl[3] / TARGET - 1) < 0.2  # inside the clip: the update depends on the KL's exact value
    assert coef[5] == coef[6] == pytest.approx(next_kl_coef(coef[3], kl[3], TARGET, 4, 8), rel=1e-5) != coef[3]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # tokens counted once per rollout (3 rollouts of 4 sequences of at most 64 + 6), not once per micro-batch
    assert 0 < state["num_input_tokens_seen"] <= 3 * 4 * (64 + 6)
    assert (out / "adapter_model.safetensors").is_file() and (out / "value_head.safetensors").is_file()
    assert not (out / "reward").exists()  # only the policy adapter is saved
    inside = torch.load(out / "checkpoint-3" / "ppo_state_0.pt", weights_only=True)
    assert inside["rollout"]["input_ids"].shape[0] == 4 and inside["moments"]["count"] == 8  # 2 rollouts scored
    assert inside["kl_coef"] == pytest.approx(coef[5], abs=1e-6)  # the next rollout's coefficient
    assert torch.load(out / "checkpoint-6" / "ppo_state_0.pt", weights_only=True)["rollout"] is None

    # killed after checkpoint-3 (inside a rollout), the run resumes to the same losses, rewards, adapter and head
    crashed = crash_after(out, 3, tmp_path / "crashed")
    assert lf(["train", str(config), f"output_dir={crashed}"]) == 0
    assert step_losses(crashed) == step_losses(out)
    for key in ("rewards/mean", "kl", "ppo/value_loss", "learning_rate", "ppo/kl_coef"):
        assert ppo_metrics(crashed, key) == ppo_metrics(out, key), key
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        a, b = load_file(out / name), load_file(crashed / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)

    # a rollout cut into other micro-batches cannot continue: one line, not a silently different run
    other = crash_after(out, 3, tmp_path / "other")
    assert lf(["train", str(config), f"output_dir={other}", "gradient_accumulation_steps=1"]) == 1
    assert "its rollout does not fit this run; resume with the ppo_epochs" in capsys.readouterr().err


def test_ppo_on_two_gloo_processes(reward_adapter, base_config, write_config, more_data, tmp_path, monkeypatch,
                                   caplog):
    base_config.update(stage="ppo", reward_model=str(reward_adapter), max_steps=2, save_steps=1,
                       per_device_train_batch_size=2, max_new_tokens=4, learning_rate=1e-3, ppo_target=0.007,
                       ppo_kl_horizon=4)
    out = tmp_path / "two"
    monkeypatch.setenv("NPROC_PER_NODE", "2")  # this process checks the config and launches two torchrun workers
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with caplog.at_level("INFO"):
        assert lf(["train", str(write_config(**base_config)), f"output_dir={out}"]) == 0
    assert "torch.distributed.run --nnodes=1 --node_rank=0 --nproc_per_node=2" in caplog.text
    assert [r["step"] for r in log_records(out) if "loss" in r] == [1, 2]  # written once, by the main process
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert (out / "adapter_model.safetensors").is_file() and (out / "value_head.safetensors").is_file()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert sorted(p.name for p in (out / "checkpoint-2").glob("ppo_state_*")) == ["ppo_state_0.pt", "ppo_state_1.pt"]
    # the adaptive KL coefficient comes from the KL over both processes: 2 x 2 sequences a rollout
    kl, coef = ppo_metrics(out, "kl"), ppo_metrics(out, "ppo/kl_coef")
    states = [torch.load(out / "checkpoint-2" / f"ppo_state_{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert coef == {1: 0.2, 2: pytest.approx(0.2 * 0.8)}  # the first rollout's KL is 0: -0.2 x 4 / 4
    assert abs(kl[2] / 0.007 - 1) < 0.2  # the second rollout's KL (0.007) inside the clip: its exact value counts
    # (the logged KL has 6 decimals: 7e-5 of the coefficient)
    assert states[0]["kl_coef"] == states[1]["kl_coef"] == pytest.approx(next_kl_coef(coef[2], kl[2], 0.007, 4, 4),
                                                                         rel=2e-4)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staging folder left


def test_ppo_with_a_separate_full_reward_model(base_config, write_config, more_data, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lf_train import reward_models

    rm_out = tmp_path / "rm-full"
    # a real full-tuning rm run (its saved layout is what is tested), as short as it gets: trained or not,
    # the logged reward must be its score
    rm = {**base_config, "stage": "rm", "dataset": "pref", "max_steps": 2, "learning_rate": 1e-3,
          "finetuning_type": "full", "output_dir": str(rm_out)}
    assert lf(["train", str(write_config(**rm))]) == 0
    seen = []
    score = reward_models.SeparateRewardModel.reward

    def recording(self, ids, mask):
        scores = score(self, ids, mask)
        seen.append((ids, mask, scores))
        return scores

    monkeypatch.setattr(reward_models.SeparateRewardModel, "reward", recording)
    base_config.update(stage="ppo", reward_model=str(rm_out), reward_model_type="full", max_steps=2,
                       per_device_train_batch_size=2, max_new_tokens=6, learning_rate=1e-3)
    assert lf(["train", str(write_config(**base_config))]) == 0
    assert len(seen) == 2
    # the logged reward is the separate model's score: recomputed here with plain transformers + the head
    plain = AutoModelForCausalLM.from_pretrained(rm_out)
    head = load_file(rm_out / "value_head.safetensors")
    logged = ppo_metrics(base_config["output_dir"], "rewards/mean")
    for step, (ids, mask, scores) in enumerate(seen, start=1):
        with torch.no_grad():
            hidden = plain(input_ids=ids, attention_mask=mask, position_ids=reward_models.positions(mask),
                           output_hidden_states=True).hidden_states[-1]
        last = reward_models.last_real_token(mask)
        expected = hidden[torch.arange(len(ids)), last] @ head["weight"][0] + head["bias"][0]
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
        assert logged[step] == pytest.approx(scores.mean().item(), abs=1e-5)


def test_ppo_with_a_reward_served_over_http(base_config, write_config, more_data, monkeypatch):
    import http.server
    import threading

    requests = []

    class Scores(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append((self.path, self.headers.get("Authorization"), body))
            answer = json.dumps({"scores": [len(text) / 100 for text in body["messages"]]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scores)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("API_KEY", "secret")
    try:
        base_config.update(stage="ppo", reward_model=f"http://127.0.0.1:{server.server_port}",
                           reward_model_type="api", max_steps=2, per_device_train_batch_size=2, max_new_tokens=6)
        assert lf(["train", str(write_config(**base_config))]) == 0
    finally:
        server.shutdown()
    assert len(requests) == 2
    logged = ppo_metrics(base_config["output_dir"], "rewards/mean")
    for step, (path, auth, body) in enumerate(requests, start=1):
        assert path == "/v1/score/evaluation" and auth == "Bearer secret"
        assert len(body["messages"]) == 2 and all("<|im_start|>user" in text for text in body["messages"])
        assert logged[step] == pytest.approx(sum(len(t) / 100 for t in body["messages"]) / 2, abs=1e-5)


@pytest.mark.parametrize(("change", "message"), [
    ({"reward_model_type": "api", "reward_model": "localhost:8000"}, "needs reward_model to be the URL"),
    ({"reward_model_type": "full"}, "reward_model_type: full needs whole weights"),
    ({"lam": 1.5}, "lam=1.5 must be at least 0 and at most 1"),
    ({"cliprange": 0}, "cliprange=0"),
    ({"stage": "sft", "reward_model": None, "gamma": 0.9}, "gamma is a key of stage ppo; set stage: ppo"),
    ({"stage": "sft", "reward_model": None, "ppo_target": 6.0}, "ppo_target is a key of stage ppo; set stage: ppo"),
    ({"ppo_target": 0}, "ppo_target=0.0 must be above 0"),
    ({"ppo_target": 6.0, "ppo_kl_horizon": 0}, "ppo_kl_horizon=0 must be at least 1"),
    ({"ppo_kl_horizon": 100}, "ppo_kl_horizon paces the adaptive KL coefficient, which ppo_target turns on"),
    ({"ppo_target": 6.0, "ppo_kl_coef": 0}, "ppo_kl_coef: 0 never moves"),
])
def test_ppo_choices_are_checked(change, message, reward_adapter, base_config, write_config, capsys):
    base_config.update({"stage": "ppo", "reward_model": str(reward_adapter), "max_steps": 2, **change})
    if base_config["reward_model"] is None:
        del base_config["reward_model"]
    assert lf(["train", str(write_config(**base_config))]) != 0
    assert message in capsys.readouterr().err


def test_ppo_is_refused_without_a_reward_model_or_lora(base_config, write_config, more_data, capsys):
    base_config.update(stage="ppo", max_steps=2)
    assert lf(["train", str(write_config(**base_config))]) == 1
    assert "stage ppo needs reward_model" in capsys.readouterr().err
