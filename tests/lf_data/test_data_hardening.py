"""Bad inputs on the data path get one line naming the file, the row or line, and the fix, before
any model loads: media a row cannot have, files `datasets` cannot read, a tokenizer-only folder."""

import json
import re

import pytest
import yaml

from lf_data.args import DataArguments
from lf_data.cli import main as lf
from lf_data.dataset_info import media_kinds
from lf_data.errors import DataError
from lf_data.loading import load_aligned
from lf_data.pipeline import build_dataset


def vl_dataset(folder, images, name="vl"):
    rows = [{"messages": [{"role": "user", "content": "<image>What is this?"},
                          {"role": "assistant", "content": "A cat."}], "images": [image]} for image in images]
    (folder / f"{name}.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps(
        {name: {"file_name": f"{name}.json", "formatting": "openai",
                "columns": {"messages": "messages", "images": "images"}}}))
    return folder / f"{name}.json"


def test_missing_image_is_an_invalid_row(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"png")
    path = vl_dataset(tmp_path, ["cat.png", "missing.png"])
    result = load_aligned(["vl"], str(tmp_path))
    assert result.rows_read == 2 and result.invalid == 1 and len(result.dataset) == 1
    assert result.errors == [f"{path}:1: image 'missing.png' does not exist under media_dir '{tmp_path}'; add the "
                             "file or fix the path (relative paths start at media_dir, default dataset_dir)"]
    assert result.dataset[0]["_images"] == [str(tmp_path / "cat.png")]


@pytest.mark.parametrize("image", ["../../etc/passwd", "/etc/passwd", "sub/../../outside.png", "file:///etc/passwd"])
def test_media_outside_media_dir_is_refused(tmp_path, image):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "outside.png").write_bytes(b"png")
    (data / "sub").mkdir()
    path = vl_dataset(data, [image])
    result = load_aligned(["vl"], str(data))
    assert result.invalid == 1 and len(result.dataset) == 0
    (error,) = result.errors
    assert error.startswith(f"{path}:0: image {image!r} ")
    assert "is outside media_dir" in error or "is neither an http(s)/data: URL nor a path under media_dir" in error


def test_media_dir_urls_absolute_paths_inside_and_symlinks(tmp_path):
    media = tmp_path / "media"
    (media / "pets").mkdir(parents=True)
    (media / "pets" / "cat.png").write_bytes(b"png")
    elsewhere = tmp_path / "big_disk"
    elsewhere.mkdir()
    (elsewhere / "dog.png").write_bytes(b"png")
    (media / "linked").symlink_to(elsewhere)  # a link the owner of media_dir made is trusted
    data = tmp_path / "data"
    data.mkdir()
    images = ["pets/cat.png", str(media / "pets" / "cat.png"), "linked/dog.png", "https://example.com/cat.png",
              "data:image/png;base64,iVBORw0KGgo=", "pets/../pets/cat.png", "linked/../outside.png"]
    path = vl_dataset(data, images)
    result = load_aligned(["vl"], str(data), media_dir=str(media))
    assert result.errors == [f"{path}:6: image 'linked/../outside.png' is outside media_dir '{media}'; move the "
                             "file under media_dir or set media_dir to a folder that holds it"]
    assert [row["_images"][0] for row in result.dataset] == [
        str(media / "pets" / "cat.png"), str(media / "pets" / "cat.png"), str(media / "linked" / "dog.png"),
        "https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo=", str(media / "pets" / "cat.png")]


def test_training_refuses_missing_media_unless_skip_invalid(tmp_path, tiny_tokenizer):
    (tmp_path / "cat.png").write_bytes(b"png")
    vl_dataset(tmp_path, ["cat.png", "gone.png"])
    data_args = DataArguments(dataset=["vl"], dataset_dir=str(tmp_path), template="chatml")
    with pytest.raises(DataError, match=r"1 invalid row\(s\) in vl:\n  .*vl.json:1: image 'gone.png' does not exist"):
        build_dataset(data_args, tiny_tokenizer, "sft")
    data_args = DataArguments(dataset=["vl"], dataset_dir=str(tmp_path), template="chatml", skip_invalid=True)
    module = build_dataset(data_args, tiny_tokenizer, "sft")
    assert module.report.invalid == 1 and len(module.train_dataset) == 1
    (tmp_path / "gone.png").write_bytes(b"png")  # fixed: the row is read again, not taken from datasets' cache
    module = build_dataset(DataArguments(dataset=["vl"], dataset_dir=str(tmp_path), template="chatml"),
                           tiny_tokenizer, "sft")
    assert module.report.invalid == 0 and len(module.train_dataset) == 2


def test_data_check_counts_missing_media_with_a_tokenizer_only_folder(tmp_path, tiny_tokenizer_dir, capsys):
    assert not (tiny_tokenizer_dir / "config.json").exists()
    (tmp_path / "cat.png").write_bytes(b"png")
    path = vl_dataset(tmp_path, ["cat.png", "missing.png"])
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_tokenizer_dir), "dataset": "vl",
                                      "dataset_dir": str(tmp_path), "template": "chatml"}))
    assert lf(["data", "check", str(config)]) == 1
    out = capsys.readouterr().out
    assert "invalid       1" in out and "kept          1" in out
    assert f"{path}:1: image 'missing.png' does not exist under media_dir" in out


def test_media_kinds_reads_dataset_info_only(tmp_path, data_dir):
    vl_dataset(tmp_path, [])
    assert media_kinds(["vl"], tmp_path) == {"vl": ["images"]}
    assert media_kinds(["identity", "chats"], data_dir) == {}


# -- files `datasets` cannot read ------------------------------------------------------------------

def dataset_file(folder, name, content: bytes, **entry):
    (folder / name).write_bytes(content)
    (folder / "dataset_info.json").write_text(json.dumps({"d": {"file_name": name, **entry}}))
    return folder / name


ROW = json.dumps({"instruction": "Who are you?", "input": "", "output": "Lumen."}).encode()


def test_jsonl_broken_on_line_5_names_line_5(tmp_path):
    path = dataset_file(tmp_path, "d.jsonl", b"\n".join([ROW] * 4 + [b'{"instruction": "q", "output": '] + [ROW]))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:5: not valid JSON: Expecting value \(column 32\); each line of a JSON Lines "
                                        "file must be one complete row object"):
        load_aligned(["d"], str(tmp_path))


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = dataset_file(tmp_path, "d.jsonl", b"\n".join([ROW, ROW, b'["a", "b"]']))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: a JSON Lines row must be an object"):
        load_aligned(["d"], str(tmp_path))


def test_json_array_broken_names_its_line(tmp_path):
    path = dataset_file(tmp_path, "d.json", b"[\n" + ROW + b",\n" + ROW + b"\n" + ROW + b"\n]")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:4: not valid JSON: Expecting ',' delimiter"):
        load_aligned(["d"], str(tmp_path))


@pytest.mark.parametrize(("name", "content", "line", "offset"), [
    ("d.json", b"[" + ROW + b",\n" + ROW.replace(b"Lumen", b"Lum\xe9n") + b"]", 2, 126),
    ("d.jsonl", ROW + b"\n" + ROW + b"\n" + ROW.replace(b"Who", b"Wh\xf6"), 3, 149),
    ("d.csv", b"instruction,input,output\nWho are you?,,Lumen.\nCaf\xe9?,,Yes.\n", 3, 49),
])
def test_invalid_utf8_names_line_and_byte_offset(tmp_path, name, content, line, offset):
    path = dataset_file(tmp_path, name, content)
    assert content[offset] >= 0x80
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:{line}: not valid UTF-8 \(byte 0x{content[offset]:02x} "
                                        rf"at byte offset {offset}, column \d+\); save it as UTF-8"):
        load_aligned(["d"], str(tmp_path))


@pytest.mark.parametrize(("name", "content"), [("d.json", b""), ("d.jsonl", b"\n  \n"), ("d.csv", b"")])
def test_empty_file_says_it_is_empty(tmp_path, name, content):
    path = dataset_file(tmp_path, name, content)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: the file is empty; put the rows of dataset 'd'"):
        load_aligned(["d"], str(tmp_path))


def test_files_without_rows_say_so(tmp_path):
    path = dataset_file(tmp_path, "d.json", b"[]")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: holds an empty array: no rows"):
        load_aligned(["d"], str(tmp_path))
    path = dataset_file(tmp_path, "d.csv", b"instruction,input,output\n")
    with pytest.raises(DataError, match=rf"^dataset 'd' .*: {re.escape(str(path))} holds no rows"):
        load_aligned(["d"], str(tmp_path))


def test_errors_are_one_line(tmp_path):
    dataset_file(tmp_path, "d.jsonl", b"\n".join([ROW] * 4 + [b"{oops"]))
    with pytest.raises(DataError) as caught:
        load_aligned(["d"], str(tmp_path))
    assert "\n" not in str(caught.value)


# -- `lf data render --tokenizer DIR` with a tokenizer alone ---------------------------------------

MESSAGES = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Lumen."}]


def test_render_with_a_tokenizer_only_folder(tiny_tokenizer_dir, tmp_path, capsys):
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(MESSAGES))
    assert lf(["data", "render", "--template", "chatml", "--tokenizer", str(tiny_tokenizer_dir),
               "--messages", str(path)]) == 0
    assert "I am Lumen." in capsys.readouterr().out


def test_render_plain_path_without_lf_models(tiny_tokenizer_dir, monkeypatch):
    import lf_data.render as render

    monkeypatch.setattr(render, "entry_points", lambda group: [])  # as when lf-models is not installed
    tokenizer, default = render.load_tokenizer(str(tiny_tokenizer_dir))
    assert default is None and tokenizer.eos_token == "<|im_end|>"
    result = render.render_conversation("chatml", tokenizer, MESSAGES)
    assert result["trained_text"] == "I am Lumen.<|im_end|>\n"
    with pytest.raises(DataError, match="could not load a tokenizer from"):
        render.load_tokenizer(str(tiny_tokenizer_dir / "nothing_here"))
