"""ModelScope and Modelers (openMind) hubs: LlamaFactory's dataset_info.json entries (ms_hub_url,
om_hub_url), the USE_MODELSCOPE_HUB / USE_OPENMIND_HUB switches for datasets and models, and the hub
tokens. The hub clients are replaced by fakes in sys.modules (no network here): the tests prove which
call is made with which arguments, and that what it downloads is what LF reads."""

from __future__ import annotations

import json
import shutil
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lf_data import loading
from lf_data.cli import main as lf
from lf_data.dataset_info import get_dataset_attr, read_dataset_info
from lf_data.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent.parent / "fixtures"
ROWS = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(5)]


@pytest.fixture(autouse=True)
def no_switches(monkeypatch):
    monkeypatch.delenv("USE_MODELSCOPE_HUB", raising=False)
    monkeypatch.delenv("USE_OPENMIND_HUB", raising=False)


@pytest.fixture
def stock_info(tmp_path) -> Path:
    """LlamaFactory 0.9.5's own data/dataset_info.json, unchanged, as a dataset_dir."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(FIXTURES / "llamafactory_dataset_info.json", folder / "dataset_info.json")
    return folder


def sources(folder: Path) -> Counter:
    return Counter(get_dataset_attr(name, folder).source for name in read_dataset_info(folder))


def test_every_entry_of_llamafactorys_dataset_info_parses(stock_info, monkeypatch):
    """104 entries: files, Hugging Face ids, and ModelScope/Modelers ids chosen as LlamaFactory chooses."""
    assert sources(stock_info) == {"hf_hub": 89, "file": 14, "ms_hub": 1}  # deepctrl is on ModelScope only
    deepctrl = get_dataset_attr("deepctrl", stock_info)
    assert (deepctrl.source, deepctrl.location) == ("ms_hub", "deepctrl/deepctrl-sft-data")
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    assert sources(stock_info) == {"ms_hub": 37, "hf_hub": 53, "file": 14}
    alpaca = get_dataset_attr("alpaca_en", stock_info)
    assert (alpaca.source, alpaca.location) == ("ms_hub", "llamafactory/alpaca_en")
    monkeypatch.delenv("USE_MODELSCOPE_HUB")
    monkeypatch.setenv("USE_OPENMIND_HUB", "true")
    assert sources(stock_info) == {"om_hub": 2, "hf_hub": 87, "file": 14, "ms_hub": 1}
    alpaca = get_dataset_attr("alpaca_en", stock_info)
    assert (alpaca.source, alpaca.location) == ("om_hub", "HaM/alpaca_en")


def test_a_hub_id_wins_over_file_name_as_in_llamafactory(tmp_path, monkeypatch):
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"both": {"file_name": "local.json", "hf_hub_url": "org/hf", "ms_hub_url": "org/ms"}}))
    assert (get_dataset_attr("both", tmp_path).source, get_dataset_attr("both", tmp_path).location) == ("hf_hub", "org/hf")
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    assert get_dataset_attr("both", tmp_path).location == "org/ms"


def test_an_entry_without_any_source_names_all_three_hubs(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"x": {"formatting": "alpaca"}, "y": {"ms_hub_url": ""}}))
    with pytest.raises(DataError, match="`hf_hub_url` \\(Hugging Face\\), `ms_hub_url` \\(ModelScope\\) or `om_hub_url`"):
        get_dataset_attr("x", tmp_path)
    with pytest.raises(DataError, match="entry 'y' has an empty ms_hub_url"):
        get_dataset_attr("y", tmp_path)


def fake_modelscope(monkeypatch, calls: list, rows=ROWS, model_path: Path | None = None) -> None:
    import datasets

    module = types.ModuleType("modelscope")

    class MsDataset:
        def __init__(self, data):
            self.data = data

        @classmethod
        def load(cls, name, **kwargs):
            calls.append(("MsDataset.load", name, kwargs))
            return cls(datasets.Dataset.from_list(rows))

        def to_hf_dataset(self):
            return self.data

    class HubApi:
        def login(self, token):
            calls.append(("login", token))

    def snapshot_download(model_id, **kwargs):
        calls.append(("snapshot_download", model_id, kwargs))
        return str(model_path)

    module.MsDataset, module.HubApi, module.snapshot_download = MsDataset, HubApi, snapshot_download
    monkeypatch.setitem(sys.modules, "modelscope", module)


def fake_openmind(monkeypatch, calls: list, folder: Path) -> None:
    module = types.ModuleType("openmind_hub")

    def snapshot_download(**kwargs):
        calls.append(("snapshot_download", kwargs))
        return str(folder)

    module.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "openmind_hub", module)


def check_config(tmp_path: Path, tiny_llama: Path, dataset_dir: Path, dataset: str) -> str:
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_llama), "template": "chatml",
                                    "dataset": dataset, "dataset_dir": str(dataset_dir), "cutoff_len": 64}))
    return str(path)


def test_lf_data_check_reads_a_modelscope_only_dataset(tmp_path, tiny_llama, stock_info, monkeypatch, capsys):
    """`lf data check` on LlamaFactory's deepctrl entry: without the client one line names the pip command;
    with it, MsDataset.load gets the repository id and the entry's split, and its rows are checked."""
    config = check_config(tmp_path, tiny_llama, stock_info, "deepctrl")
    monkeypatch.setitem(sys.modules, "modelscope", None)  # not installed
    assert lf(["data", "check", config]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: dataset 'deepctrl' (deepctrl/deepctrl-sft-data) is on ModelScope; reading it needs its client: "
        "pip install modelscope (or 'lf-models[modelscope]').")

    calls: list = []
    fake_modelscope(monkeypatch, calls)
    assert lf(["data", "check", config]) == 0
    out = capsys.readouterr().out
    assert "rows read     5" in out and "kept          5" in out
    assert calls[0] == ("MsDataset.load", "deepctrl/deepctrl-sft-data",
                        {"subset_name": None, "split": "train", "data_dir": None, "token": None,
                         "use_streaming": False})


def test_modelscope_dataset_gets_the_token_and_cache_of_the_model_keys(tmp_path, monkeypatch):
    from lf_models.args import ModelArguments
    from lf_models.loader import hub_credentials

    calls: list = []
    fake_modelscope(monkeypatch, calls)
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"d": {"ms_hub_url": "org/d", "subset": "zh", "split": "test", "folder": "part1"}}))
    hub = hub_credentials(ModelArguments(model_name_or_path="unused", ms_hub_token="ms-tok",
                                         cache_dir=str(tmp_path / "c")))
    rows = loading.load_raw(get_dataset_attr("d", tmp_path), hub=hub)
    assert rows.num_rows == 5
    assert calls == [("MsDataset.load", "org/d", {"subset_name": "zh", "split": "test", "data_dir": "part1",
                                                  "token": "ms-tok", "use_streaming": False,
                                                  "cache_dir": str(tmp_path / "c")})]


def test_openmind_dataset_is_downloaded_then_read_from_the_local_copy(tmp_path, monkeypatch):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "train.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:3]) + "\n")
    calls: list = []
    fake_openmind(monkeypatch, calls, snapshot)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"om_hub_url": "HaM/alpaca_en"}}))
    aligned = loading.load_aligned(["d"], str(tmp_path), hub=loading.HubCredentials(om="om-tok"))
    assert calls == [("snapshot_download", {"repo_id": "HaM/alpaca_en", "repo_type": "dataset", "token": "om-tok",
                                            "cache_dir": None})]
    assert aligned.rows_read == 3 and aligned.dataset[2]["_response"][0]["content"] == "Answer 2."

    monkeypatch.setitem(sys.modules, "openmind_hub", None)
    with pytest.raises(DataError, match=r"is on Modelers \(openMind\); reading it needs its client: pip install "
                                        r"openmind-hub\.$"):
        loading.load_raw(get_dataset_attr("d", tmp_path))


def test_use_modelscope_hub_downloads_the_model_and_loads_the_local_snapshot(tmp_path, tiny_llama, monkeypatch,
                                                                             capsys):
    from lf_models.args import ModelArguments
    from lf_models.loader import load_tokenizer, resolve_model

    calls: list = []
    fake_modelscope(monkeypatch, calls, model_path=tiny_llama)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    args = ModelArguments(model_name_or_path="LLM-Research/tiny", ms_hub_token="ms-tok", cache_dir=str(tmp_path))
    source = resolve_model(args)
    assert (source.path, source.local) == (str(tiny_llama), True)
    assert calls == [("login", "ms-tok"),
                     ("snapshot_download", "LLM-Research/tiny", {"revision": "master", "cache_dir": str(tmp_path)})]
    assert load_tokenizer(args, source).name_or_path == str(tiny_llama)

    calls.clear()  # the user's path: `lf export --check` reads the downloaded config
    assert lf(["export", "model_name_or_path=LLM-Research/tiny", f"export_dir={tmp_path / 'out'}",
               "model_revision=v1.0", "--check"]) == 0
    assert calls == [("snapshot_download", "LLM-Research/tiny", {"revision": "v1.0", "cache_dir": None})]
    assert "is valid" in capsys.readouterr().out

    calls.clear()  # a local folder is never downloaded
    assert resolve_model(ModelArguments(model_name_or_path=str(tiny_llama))).path == str(tiny_llama)
    assert calls == []


def test_use_openmind_hub_downloads_the_model(tmp_path, tiny_llama, monkeypatch):
    from lf_models.args import ModelArguments
    from lf_models.loader import resolve_model

    calls: list = []
    fake_openmind(monkeypatch, calls, tiny_llama)
    monkeypatch.setenv("USE_OPENMIND_HUB", "1")
    source = resolve_model(ModelArguments(model_name_or_path="PyTorch-NPU/tiny", om_hub_token="om-tok"))
    assert source.path == str(tiny_llama) and source.local
    assert calls == [("snapshot_download", {"repo_id": "PyTorch-NPU/tiny", "revision": "main", "cache_dir": None,
                                            "token": "om-tok"})]


@pytest.mark.parametrize("variable, module, message", [
    ("USE_MODELSCOPE_HUB", "modelscope", "USE_MODELSCOPE_HUB=1 downloads models from ModelScope, which needs its "
                                         "client: pip install 'lf-models[modelscope]'."),
    ("USE_OPENMIND_HUB", "openmind_hub", "USE_OPENMIND_HUB=1 downloads models from Modelers (openMind), which needs "
                                         "its client: pip install openmind-hub."),
])
def test_a_missing_hub_client_is_one_line(variable, module, message, monkeypatch):
    from lf_models.args import ModelArguments
    from lf_models.loader import resolve_model

    monkeypatch.setenv(variable, "1")
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError) as err:
        resolve_model(ModelArguments(model_name_or_path="org/model"))
    assert str(err.value) == message


def test_a_failed_download_is_one_line(monkeypatch):
    from lf_models.args import ModelArguments
    from lf_models.loader import resolve_model

    module = types.ModuleType("modelscope")

    def snapshot_download(model_id, **kwargs):
        raise ConnectionError("Name or service not known\n  (retries exhausted)")

    module.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "modelscope", module)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    with pytest.raises(ConfigError) as err:
        resolve_model(ModelArguments(model_name_or_path="org/model"))
    assert str(err.value) == ("could not download 'org/model' from ModelScope: ConnectionError: Name or service not "
                              "known (retries exhausted). Without network access, download it and point "
                              "model_name_or_path at its folder.")


def test_hf_hub_token_reaches_transformers_and_datasets(monkeypatch, tmp_path):
    import datasets

    from lf_models.args import ModelArguments
    from lf_models.loader import ModelSource, _hub_kwargs, hub_credentials

    args = ModelArguments(model_name_or_path="org/private", hf_hub_token="hf-tok")
    assert _hub_kwargs(args, ModelSource("org/private", local=False))["token"] == "hf-tok"
    assert "token" not in _hub_kwargs(args, ModelSource("/local", local=True))
    seen = {}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.update(args=a, kwargs=k) or "rows")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"hf_hub_url": "org/private-data"}}))
    assert loading.load_raw(get_dataset_attr("d", tmp_path), hub=hub_credentials(args)) == "rows"
    assert seen["args"] == ("org/private-data",) and seen["kwargs"]["token"] == "hf-tok"
