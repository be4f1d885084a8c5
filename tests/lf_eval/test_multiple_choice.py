"""`lf eval` on local fixture tasks (MMLU, C-Eval and CMMLU layouts) with models rigged to answer one letter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lf_data.cli import main as lf_main
from lf_data.errors import ConfigError, DataError
from lf_eval.args import EvalArguments
from lf_eval.questions import load_task
from lf_eval.run import run_eval

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
MMLU_SUBJECTS = ["abstract_algebra", "philosophy", "sociology", "virology"]
# answers in tests/fixtures/eval/mmlu/data/test: how many are B, of how many
B_ANSWERS = {"abstract_algebra": (2, 4), "philosophy": (3, 3), "sociology": (1, 5), "virology": (0, 2)}


def rig(model, tokenizer, letter: str) -> None:
    """Make `letter` the top next token everywhere: residual dimension 0 carries a constant 100
    (nothing writes to it but the embeddings) and only `letter`'s output row reads it."""
    import torch

    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 100.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(letter), 0] = 1.0


@pytest.fixture(scope="module")
def rigged_b(tiny_llama, tiny_tokenizer, tmp_path_factory) -> Path:
    """The tiny Llama answering B to everything."""
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("rigged-b")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    rig(model, tiny_tokenizer, "B")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def adapter_to_c(rigged_b, tiny_tokenizer, tmp_path_factory) -> Path:
    """A LoRA adapter on lm_head that turns the B-answering model into a C-answering one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("adapter-c")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(rigged_b),
                           LoraConfig(r=1, lora_alpha=1, target_modules=["lm_head"], init_lora_weights=False))
    c_id = tiny_tokenizer.convert_tokens_to_ids("C")
    with torch.no_grad():
        lora_a = model.base_model.model.lm_head.lora_A["default"].weight
        lora_b = model.base_model.model.lm_head.lora_B["default"].weight
        lora_a.zero_()
        lora_a[0, 0] = 1.0
        lora_b.zero_()
        lora_b[c_id, 0] = 2.0  # C's row now reads dimension 0 twice as strongly as B's
    model.save_pretrained(path, save_embedding_layers=False)
    return path


def mmlu_config(model: Path, tmp_path: Path, **extra) -> dict:
    return {"model_name_or_path": str(model), "template": "chatml", "task": "mmlu_test",
            "task_dir": str(FIXTURES), "subjects": MMLU_SUBJECTS, "n_shot": 2, "batch_size": 3,
            "save_dir": str(tmp_path / "results"), **extra}


def test_rigged_model_accuracy_per_subject_category_and_average(rigged_b, tmp_path, capsys):
    results = run_eval(mmlu_config(rigged_b, tmp_path))

    for subject, (right, total) in B_ANSWERS.items():
        row = results["subjects"][subject]
        assert (row["correct"], row["questions"]) == (right, total)
        assert row["accuracy"] == pytest.approx(100 * right / total)
        assert results["predictions"][subject] == ["B"] * total
    # one fixture subject per MMLU category: the registry maps each to its category
    assert {s: r["category"] for s, r in results["subjects"].items()} == {
        "abstract_algebra": "STEM", "philosophy": "Humanities", "sociology": "Social Sciences", "virology": "Other"}
    assert {c: r["accuracy"] for c, r in results["categories"].items()} == {
        "STEM": 50.0, "Humanities": 100.0, "Social Sciences": 20.0, "Other": 0.0}
    assert results["average"] == pytest.approx(100 * 6 / 14, abs=1e-4)
    assert (results["correct"], results["questions"]) == (6, 14)

    saved = json.loads((tmp_path / "results" / "results.json").read_text())
    assert saved["average"] == results["average"] and saved["n_shot"] == 2 and saved["template"] == "chatml"
    assert saved["subjects"]["philosophy"] == {"name": "philosophy", "category": "Humanities", "accuracy": 100.0,
                                               "correct": 3, "questions": 3}
    table = capsys.readouterr().out
    assert "Social Sciences" in table and "42.86" in table and "sociology" in table


def test_adapter_changes_the_answers(rigged_b, adapter_to_c, tmp_path):
    results = run_eval(mmlu_config(rigged_b, tmp_path, adapter_name_or_path=str(adapter_to_c), n_shot=0))
    assert all(set(p) == {"C"} for p in results["predictions"].values())
    # C is the answer of 1 algebra, 3 sociology questions and none of the others
    assert {s: r["correct"] for s, r in results["subjects"].items()} == {
        "abstract_algebra": 1, "philosophy": 0, "sociology": 3, "virology": 0}
    assert results["adapter_name_or_path"] == [str(adapter_to_c)]


def test_cli_runs_a_yaml_config_and_refuses_to_overwrite(rigged_b, tmp_path, capsys):
    config = tmp_path / "mmlu.yaml"
    config.write_text(yaml.safe_dump(mmlu_config(rigged_b, tmp_path)))
    assert lf_main(["eval", str(config), "n_shot=1"]) == 0
    assert json.loads((tmp_path / "results" / "results.json").read_text())["n_shot"] == 1
    capsys.readouterr()
    assert lf_main(["eval", str(config)]) == 1
    assert "already holds results.json" in capsys.readouterr().err
    assert lf_main(["eval", str(config), "overwrite_save_dir=true", "n_shot=0"]) == 0
    assert json.loads((tmp_path / "results" / "results.json").read_text())["n_shot"] == 0


def test_batched_scores_equal_one_at_a_time(tiny_llama, tiny_tokenizer):
    """Left padding with position ids: a prompt scores the same alone and in a padded batch."""
    from transformers import AutoModelForCausalLM

    from lf_data.templates import get_template
    from lf_eval.choice_scoring import choice_token_ids, score_choices
    from lf_eval.prompts import encode_question

    task = load_task(EvalArguments(task="mmlu_test", task_dir=str(FIXTURES), subjects=MMLU_SUBJECTS, n_shot=2))
    template = get_template("chatml")
    prompts = [encode_question(template, tiny_tokenizer, q, task.shots[s], s, "en", 2048)[0]
               for s, qs in task.questions.items() for q in qs]
    assert len({len(p) for p in prompts}) > 3  # really different lengths, so padding happens
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = choice_token_ids(tiny_tokenizer, "ABCD")
    alone = score_choices(model, prompts, ids, tiny_tokenizer.pad_token_id, batch_size=1)
    batched = score_choices(model, prompts, ids, tiny_tokenizer.pad_token_id, batch_size=5)
    assert [x for row in batched for x in row] == pytest.approx([x for row in alone for x in row], abs=1e-4)


def test_few_shot_prompt_is_rendered_with_the_chat_template(tiny_tokenizer):
    from lf_data.templates import get_template
    from lf_eval.prompts import encode_question

    task = load_task(EvalArguments(task="mmlu_test", task_dir=str(FIXTURES), subjects=["philosophy"], n_shot=2))
    question = task.questions["philosophy"][0]
    ids, kept = encode_question(get_template("chatml"), tiny_tokenizer, question, task.shots["philosophy"],
                                "philosophy", "en", 2048)
    assert kept == 2
    assert tiny_tokenizer.decode(ids) == (
        "<|im_start|>user\n"
        "The following are multiple choice questions (with answers) about philosophy.\n\n"
        "Who wrote the Republic?\nA. Aristotle\nB. Plato\nC. Kant\nD. Hume\nAnswer:<|im_end|>\n"
        "<|im_start|>assistant\nB<|im_end|>\n"
        "<|im_start|>user\n"
        "Which philosopher said 'I think, therefore I am'?\nA. Locke\nB. Descartes\nC. Hegel\nD. Mill\n"
        "Answer:<|im_end|>\n"
        "<|im_start|>assistant\nB<|im_end|>\n"
        "<|im_start|>user\n"
        "Who was the teacher of Aristotle?\nA. Socrates\nB. Plato\nC. Thales\nD. Zeno\nAnswer:<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # a prompt longer than cutoff_len drops its last examples first
    short, kept = encode_question(get_template("chatml"), tiny_tokenizer, question, task.shots["philosophy"],
                                  "philosophy", "en", len(ids) - 1)
    assert kept == 1 and len(short) < len(ids)


def test_chinese_task_in_ceval_layout(rigged_b, tiny_tokenizer, tmp_path):
    from lf_data.templates import get_template
    from lf_eval.prompts import build_messages

    task = load_task(EvalArguments(task="ceval_val", task_dir=str(FIXTURES), subjects=["advanced_mathematics", "law"],
                                   n_shot=1))
    assert task.lang == "zh" and task.subjects["law"].name == "法学"
    messages = build_messages(task.questions["law"][1], task.shots["law"], "法学", "zh")
    assert messages[0]["content"].startswith("以下是关于法学的单项选择题")
    assert messages[-1]["content"].endswith("D. 最高人民检察院\n答案：")
    assert get_template("chatml").encode_prompt(tiny_tokenizer, messages)

    results = run_eval({"model_name_or_path": str(rigged_b), "template": "chatml", "task": "ceval_validation",
                        "task_dir": str(FIXTURES), "subjects": "advanced_mathematics,law", "n_shot": 1})
    assert {s: r["correct"] for s, r in results["subjects"].items()} == {"advanced_mathematics": 2, "law": 1}
    assert {c: r["accuracy"] for c, r in results["categories"].items()} == {"STEM": pytest.approx(200 / 3),
                                                                            "Humanities": 50.0}


def test_unknown_local_task_reads_subjects_from_files(rigged_b, tmp_path):
    task = load_task(EvalArguments(task="quiz_test", task_dir=str(FIXTURES), n_shot=1))
    assert list(task.subjects) == ["arithmetic", "geography"]
    assert task.subjects["arithmetic"].name == "elementary arithmetic"  # from mapping.json
    assert task.subjects["geography"].category == "Other"  # not in mapping.json
    assert task.questions["geography"][1].options == ("Alps", "Andes", "Himalayas", "Rockies")

    results = run_eval({"model_name_or_path": str(rigged_b), "template": "chatml", "task": "quiz_test",
                        "task_dir": str(FIXTURES), "n_shot": 1, "batch_size": 2})
    assert {s: r["correct"] for s, r in results["subjects"].items()} == {"arithmetic": 1, "geography": 1}
    assert {c: r["questions"] for c, r in results["categories"].items()} == {"STEM": 3, "Other": 2}


# -- bad input: clear errors naming the file, row or key, before any model loads -------------------
def copy_task(tmp_path: Path, name: str = "mmlu") -> Path:
    shutil.copytree(FIXTURES / name, tmp_path / name)
    return tmp_path / name


def test_missing_task_dir_and_split():
    with pytest.raises(ConfigError, match="task folder .*nowhere/quiz' does not exist"):
        load_task(EvalArguments(task="quiz_test", task_dir="nowhere"))
    with pytest.raises(ConfigError, match="has no val split"):
        load_task(EvalArguments(task="quiz_val", task_dir=str(FIXTURES)))
    with pytest.raises(ConfigError, match="is not NAME_SPLIT"):
        load_task(EvalArguments(task="mmlu", task_dir=str(FIXTURES)))


def test_known_task_offline_without_local_copy_names_the_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist and cais/mmlu .* could not be loaded from the hub"):
        load_task(EvalArguments(task="mmlu_test", task_dir=str(tmp_path), subjects=["virology"]))


def test_missing_subjects(tmp_path):
    with pytest.raises(ConfigError, match=r"53 of 57 subjects have no test file .*astronomy_test.csv.*`subjects`"):
        load_task(EvalArguments(task="mmlu_test", task_dir=str(FIXTURES)))
    with pytest.raises(ConfigError, match=r"'virolgy' is not a subject of task 'mmlu'. Did you mean 'virology'"):
        load_task(EvalArguments(task="mmlu_test", task_dir=str(FIXTURES), subjects=["virolgy"]))
    with pytest.raises(ConfigError, match=r"3 of 4 subjects have no val file"):
        load_task(EvalArguments(task="mmlu_val", task_dir=str(FIXTURES), subjects=MMLU_SUBJECTS))
    root = copy_task(tmp_path)
    (root / "data" / "dev" / "virology_dev.csv").unlink()
    with pytest.raises(ConfigError, match=r"n_shot=2 .*virology_dev.csv does not exist. Add it, or set n_shot: 0"):
        load_task(EvalArguments(task="mmlu_test", task_dir=str(tmp_path), subjects=MMLU_SUBJECTS, n_shot=2))
    with pytest.raises(ConfigError, match=r"n_shot=3 but .*philosophy_dev.csv holds only 2 examples"):
        load_task(EvalArguments(task="mmlu_test", task_dir=str(FIXTURES), subjects=["philosophy"], n_shot=3))


@pytest.mark.parametrize(("row", "message"), [
    ("Only five cells,a,b,c,d", r"virology_test.csv, row 2: 5 cells, expected 6 \(question,A,B,C,D,answer\)"),
    ("What is it?,a,b,c,d,E", r"virology_test.csv, row 2: answer 'E' is not one of A, B, C, D"),
    (",a,b,c,d,A", r"virology_test.csv, row 2: the question is empty"),
])
def test_bad_csv_row_names_file_and_row(tmp_path, row, message):
    root = copy_task(tmp_path)
    path = root / "data" / "test" / "virology_test.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], row, *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=message):
        load_task(EvalArguments(task="mmlu_test", task_dir=str(tmp_path), subjects=["virology"], n_shot=0))


def test_split_without_answers_is_refused():
    with pytest.raises(DataError, match=r"law_test.csv has no `answer` column.*ceval_val"):
        load_task(EvalArguments(task="ceval_test", task_dir=str(FIXTURES), subjects=["law"], n_shot=0))


def test_config_errors_come_before_the_model(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'n_shots'. Did you mean 'n_shot'"):
        run_eval({"model_name_or_path": "no/such-model", "task": "mmlu_test", "n_shots": 5})
    with pytest.raises(ConfigError, match="`task` is required"):
        run_eval({"model_name_or_path": "no/such-model"})
    with pytest.raises(ConfigError, match="lang='fr' is not a valid choice"):
        run_eval({"model_name_or_path": "no/such-model", "task": "mmlu_test", "lang": "fr"})


def test_hub_rows_of_each_benchmark_shape(tmp_path, monkeypatch):
    """Without a local folder, a built-in task reads the hub repository (rows of each repository's shape)."""
    import datasets

    calls = []
    hub = {  # (repository, subject, split) -> rows in that repository's columns
        ("cais/mmlu", "virology", "test"): [{"question": "Q1", "subject": "virology", "choices": ["a", "b", "c", "d"],
                                             "answer": 3}],
        ("cais/mmlu", "virology", "dev"): [{"question": "S1", "subject": "virology", "choices": ["a", "b", "c", "d"],
                                            "answer": 1}],
        ("ceval/ceval-exam", "law", "val"): [{"id": 0, "question": "问", "A": "甲", "B": "乙", "C": "丙", "D": "丁",
                                              "answer": "C", "explanation": ""}],
        ("haonan-li/cmmlu", "arts", "test"): [{"Question": "问", "A": "1", "B": "2", "C": "3", "D": "4", "Answer": "A"}],
    }

    def fake_load_dataset(repo, subject, split):
        calls.append((repo, subject, split))
        return hub[(repo, subject, split)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task(EvalArguments(task="mmlu_test", task_dir=str(tmp_path), subjects=["virology"], n_shot=1))
    assert task.source == "cais/mmlu" and task.questions["virology"][0].answer == "D"
    assert task.shots["virology"][0].answer == "B" and task.questions["virology"][0].options == ("a", "b", "c", "d")
    task = load_task(EvalArguments(task="ceval_validation", task_dir=str(tmp_path), subjects=["law"], n_shot=0))
    assert task.questions["law"][0].answer == "C" and task.lang == "zh"
    task = load_task(EvalArguments(task="cmmlu_test", task_dir=str(tmp_path), subjects=["arts"], n_shot=0))
    assert task.questions["arts"][0].options == ("1", "2", "3", "4") and task.subjects["arts"].category == "Humanities"
    assert calls == [("cais/mmlu", "virology", "test"), ("cais/mmlu", "virology", "dev"),
                     ("ceval/ceval-exam", "law", "val"), ("haonan-li/cmmlu", "arts", "test")]
    with pytest.raises(ConfigError, match="cmmlu has no val split on the hub"):
        load_task(EvalArguments(task="cmmlu_val", task_dir=str(tmp_path), subjects=["arts"], n_shot=0))
