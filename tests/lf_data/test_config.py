from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from lf_data.atomic_files import write_yaml_atomic
from lf_data.config import parse_sections, read_config
from lf_data.errors import ConfigError


@dataclass
class Section:
    learning_rate: float = 1e-4
    lora_rank: int = 8
    lora_target: list[str] | None = None
    plot_loss: bool = False
    stage: Literal["sft", "dpo"] = "sft"
    template: str | None = None


def test_yaml_and_overrides_are_typed(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 1e-4\nlora_rank: 16\nlora_target: q_proj,v_proj\n")
    config = read_config(path, ["lora_rank=4", "plot_loss=true", "template=smollm2"])
    (section,) = parse_sections(config, Section)
    assert section.learning_rate == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as text: coerced
    assert section.lora_rank == 4
    assert section.lora_target == ["q_proj", "v_proj"]
    assert section.plot_loss is True
    assert section.template == "smollm2"


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'lora_rnak' in run.yaml. Did you mean 'lora_rank'\?"):
        parse_sections({"lora_rnak": 8}, Section, source="run.yaml")


def test_allow_extra_args_ignores_unknown_keys_with_a_warning(monkeypatch, caplog):
    """LlamaFactory's ALLOW_EXTRA_ARGS=1, for recipes that carry keys of the user's own."""
    monkeypatch.setenv("ALLOW_EXTRA_ARGS", "1")
    with caplog.at_level("WARNING", logger="lf_data.config"):
        (section,) = parse_sections({"lora_rank": 4, "my_note": "v2"}, Section, source="run.yaml")
    assert section.lora_rank == 4
    assert "ALLOW_EXTRA_ARGS is set, so these keys are ignored: unknown config key 'my_note' in run.yaml." in caplog.text
    monkeypatch.setenv("ALLOW_EXTRA_ARGS", "0")
    with pytest.raises(ConfigError, match="unknown config key 'my_note'"):
        parse_sections({"my_note": "v2"}, Section)


def test_an_unquoted_yaml_no_is_the_word_where_a_choice_needs_it(tmp_path):
    """YAML 1.1 (PyYAML, OmegaConf) reads `save_strategy: no` as false; where "no" is one of the field's
    choices (transformers' strategies, LF's Literal keys), it is the word again."""
    import enum

    from lf_data.config import coerce_value

    class Strategy(enum.Enum):
        NO, STEPS = "no", "steps"

    path = tmp_path / "run.yaml"
    path.write_text("save_strategy: no\nmode: off\nflag: no\n")
    config = read_config(path, ["eval_strategy=no"])
    assert config["save_strategy"] is False and config["eval_strategy"] is False  # what YAML 1.1 gives
    assert coerce_value("save_strategy", config["save_strategy"], Strategy | str) == "no"
    assert coerce_value("eval_strategy", config["eval_strategy"], Strategy | str) == "no"
    assert coerce_value("mode", config["mode"], Literal["on", "off"]) == "off"
    assert coerce_value("flag", config["flag"], bool) is False  # a boolean field keeps its boolean
    with pytest.raises(ConfigError, match="stage=False is not a valid choice"):
        coerce_value("stage", False, Literal["sft", "dpo"])


def test_several_unknown_keys_are_all_named():
    with pytest.raises(ConfigError) as err:
        parse_sections({"lora_rnak": 8, "learnin_rate": 1.0}, Section)
    assert "'lora_rnak'" in str(err.value) and "'learnin_rate'" in str(err.value)
    assert "'learning_rate'" in str(err.value)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("lora_rank", "eight", "lora_rank must be an integer, got 'eight'"),
    ("lora_rank", 2.5, "lora_rank must be an integer"),
    ("plot_loss", "yes please", "plot_loss must be true or false"),
    ("learning_rate", "fast", "learning_rate must be a number"),
    ("stage", "sfft", "stage='sfft' is not a valid choice; use one of sft, dpo. Did you mean 'sft'?"),
])
def test_wrong_types_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        parse_sections({key: value}, Section)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage: sft\nlora_rank: [8\nplot_loss: true\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line \d+, column \d+"):
        read_config(path)


def test_config_must_be_flat(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text("model:\n  name: x\n")
    with pytest.raises(ConfigError, match="unknown config key 'model'. LF configs are flat"):
        parse_sections(read_config(path), Section)


def test_missing_config_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        read_config(None, ["lora_rank"])


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "out" / "lf_config.yaml"
    write_yaml_atomic(target, {"a": 1, "b": [1, 2]})
    assert yaml.safe_load(target.read_text()) == {"a": 1, "b": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["lf_config.yaml"]
