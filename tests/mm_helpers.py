"""Multimodal test data made here: images drawn with PIL, written as LlamaFactory's `mllm_demo` rows
(sharegpt messages with `<image>` placeholders and an `images` column)."""

import json
from pathlib import Path

COLOURS = [("red", "It is red."), ("blue", "It is blue."), ("green", "It is green."), ("yellow", "It is yellow.")]
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}


def make_image(path: Path, colour: str, size: tuple[int, int]) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((4, 4, size[0] // 2, size[1] // 2), fill="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_image_dataset(folder: Path, name: str = "mllm_demo") -> Path:
    """Four one-image rows (images of different sizes) and one two-image row, plus dataset_info.json."""
    rows = []
    for i, (colour, answer) in enumerate(COLOURS):
        make_image(folder / "mllm_demo_data" / f"{i}.png", colour, (56 + 14 * i, 84))
        rows.append({"messages": [{"role": "user", "content": "<image>What colour is this?"},
                                  {"role": "assistant", "content": answer}],
                     "images": [f"mllm_demo_data/{i}.png"]})
    rows.append({"messages": [{"role": "user", "content": "Is <image> the same colour as <image>?"},
                              {"role": "assistant", "content": "No."}],
                 "images": ["mllm_demo_data/0.png", "mllm_demo_data/1.png"]})
    (folder / f"{name}.json").write_text(json.dumps(rows, indent=1))
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[name] = {"file_name": f"{name}.json", "formatting": "sharegpt",
                  "columns": {"messages": "messages", "images": "images"}, "tags": SHAREGPT_TAGS}
    info_path.write_text(json.dumps(info, indent=2))
    return folder
