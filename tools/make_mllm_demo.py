"""Write LlamaFactory-style multimodal demo datasets, made here from nothing but code: no downloads.

Run: uv run python tools/make_mllm_demo.py [FOLDER]   (default: the repository's data/)

Writes into FOLDER, beside any datasets already there:
- `mllm_demo.json` with PNG images drawn with PIL (`mllm_demo_data/*.png`),
- `mllm_video_demo.json` with short H.264 mp4 clips encoded with `av` from numpy frames
  (`mllm_demo_data/*.mp4`; 8 frames at 4 fps, 2 seconds),
- `mllm_audio_demo.json` with wav tones written with soundfile (`mllm_demo_data/*.wav`; 16 kHz mono),
and adds their entries to FOLDER/dataset_info.json (other entries are kept). Each is in LlamaFactory's
format: sharegpt `messages` with `<image>`/`<video>`/`<audio>` placeholders and an `images`/`videos`/
`audios` column of paths relative to the dataset folder, so LlamaFactory's recipes naming `mllm_demo`,
`mllm_video_demo` or `mllm_audio_demo` find them. The files are small (about 120 KB in all)
and every answer is true of its picture, clip or sound.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MEDIA_FOLDER = "mllm_demo_data"
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
VIDEO_FPS = 4
VIDEO_FRAMES = 8
VIDEO_SIZE = (112, 84)
"""(width, height) of every clip: even sides, as H.264 with 4:2:0 chroma needs."""
AUDIO_RATE = 16000
"""Hz; the rate Qwen2-Audio's and Whisper's feature extractors expect (other rates are resampled)."""
COLUMN = {"images": "mllm_demo", "videos": "mllm_video_demo", "audios": "mllm_audio_demo"}
"""The dataset each media kind goes to."""


def _entry(kind: str) -> dict[str, Any]:
    """LlamaFactory's dataset_info.json entry for the demo of `kind`."""
    return {"file_name": f"{COLUMN[kind]}.json", "formatting": "sharegpt",
            "columns": {"messages": "messages", kind: kind}, "tags": dict(SHAREGPT_TAGS)}


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [message for user, assistant in pairs
            for message in ({"role": "user", "content": user}, {"role": "assistant", "content": assistant})]


# -- images -----------------------------------------------------------------------------------------
# (file, size, background, shapes): each shape is (kind, colour, box as fractions of the size)
IMAGES = [
    ("1.png", (84, 84), "white", [("ellipse", "red", (0.2, 0.2, 0.8, 0.8))]),
    ("2.png", (112, 84), "white", [("rectangle", "blue", (0.3, 0.2, 0.7, 0.8))]),
    ("3.png", (84, 112), "black", [("triangle", "green", (0.15, 0.2, 0.85, 0.8))]),
    ("4.png", (112, 112), "white", [("ellipse", "orange", (0.1, 0.3, 0.4, 0.6)),
                                    ("ellipse", "orange", (0.6, 0.3, 0.9, 0.6))]),
]
# rows: (messages, image files in placeholder order)
IMAGE_ROWS = [
    (_turns(("<image>What shape is in this picture?", "A red circle on a white background."),
            ("And in this one?<image>", "A blue rectangle.")), ["1.png", "2.png"]),
    (_turns(("<image>What colour is the triangle?", "The triangle is green.")), ["3.png"]),
    (_turns(("<image>How many circles are there?", "There are two orange circles.")), ["4.png"]),
    (_turns(("Are <image> and <image> the same colour?", "No: the circle is red and the rectangle is blue.")),
     ["1.png", "2.png"]),
    (_turns(("Describe the background of this image. <image>", "The background is black.")), ["3.png"]),
]


def _draw(path: Path, size: tuple[int, int], background: str, shapes: list[tuple[str, str, tuple]]) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    w, h = size
    for shape, colour, (x0, y0, x1, y1) in shapes:
        box = (x0 * w, y0 * h, x1 * w, y1 * h)
        if shape == "ellipse":
            draw.ellipse(box, fill=colour)
        elif shape == "rectangle":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=colour)
    image.save(path, optimize=True)


def write_image_demo(folder: Path) -> Path:
    """mllm_demo.json and its PNG images; returns the JSON file."""
    media = folder / MEDIA_FOLDER
    media.mkdir(parents=True, exist_ok=True)
    for name, size, background, shapes in IMAGES:
        _draw(media / name, size, background, shapes)
    return _write_rows(folder, "images", IMAGE_ROWS)


# -- videos -----------------------------------------------------------------------------------------
# 1.mp4: a red ball crossing left to right; 2.mp4: a blue square growing; 3.mp4: black fading to white
VIDEO_ROWS = [
    (_turns(("<video>Which way is the ball moving?", "From left to right.")), ["1.mp4"]),
    (_turns(("<video>What happens to the square?", "It grows larger.")), ["2.mp4"]),
    (_turns(("<video>What colour is the ball?", "It is red."),
            ("Does the screen change colour in this clip?<video>", "Yes, it fades from black to white.")),
     ["1.mp4", "3.mp4"]),
]


def _frame(scene: str, index: int) -> Any:
    """Frame `index` of a scene as an RGB uint8 array (height, width, 3)."""
    import numpy as np

    w, h = VIDEO_SIZE
    t = index / (VIDEO_FRAMES - 1)
    if scene == "fade":
        return np.full((h, w, 3), round(255 * t), dtype=np.uint8)
    frame = np.full((h, w, 3), 255, dtype=np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    if scene == "ball":  # a red ball crossing from left to right
        cx, cy, r = 12 + t * (w - 24), h / 2, 10
        frame[(xs - cx) ** 2 + (ys - cy) ** 2 <= r * r] = (220, 20, 20)
    else:  # a blue square growing around the centre
        half = 6 + t * (min(w, h) / 2 - 10)
        frame[(abs(xs - w / 2) <= half) & (abs(ys - h / 2) <= half)] = (20, 40, 220)
    return frame


def _encode(path: Path, scene: str) -> None:
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=VIDEO_FPS)
        stream.width, stream.height = VIDEO_SIZE
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "28", "preset": "veryslow", "threads": "1"}
        for i in range(VIDEO_FRAMES):
            frame = av.VideoFrame.from_ndarray(_frame(scene, i), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_video_demo(folder: Path) -> Path:
    """mllm_video_demo.json and its mp4 clips; returns the JSON file."""
    media = folder / MEDIA_FOLDER
    media.mkdir(parents=True, exist_ok=True)
    for name, scene in (("1.mp4", "ball"), ("2.mp4", "square"), ("3.mp4", "fade")):
        _encode(media / name, scene)
    return _write_rows(folder, "videos", VIDEO_ROWS)


# -- audios -----------------------------------------------------------------------------------------
AUDIO_ROWS = [
    (_turns(("<audio>What can you hear?", "A single steady tone.")), ["1.wav"]),
    (_turns(("<audio>Is the pitch rising or falling?", "It is rising.")), ["2.wav"]),
    (_turns(("<audio>How many notes are played?", "Three short notes."),
            ("And here?<audio>", "One steady tone.")), ["3.wav", "1.wav"]),
]


def _sound(kind: str) -> Any:
    """A mono float32 waveform at AUDIO_RATE, faded in and out to avoid clicks."""
    import numpy as np

    duration = 1.0 if kind != "notes" else 1.2
    t = np.arange(int(AUDIO_RATE * duration)) / AUDIO_RATE
    if kind == "tone":  # 440 Hz
        wave = np.sin(2 * math.pi * 440 * t)
    elif kind == "sweep":  # 300 Hz rising to 1200 Hz
        wave = np.sin(2 * math.pi * (300 * t + (1200 - 300) / (2 * duration) * t * t))
    else:  # three notes (C5, E5, G5) with short silences
        wave = np.zeros_like(t)
        for i, freq in enumerate((523.25, 659.25, 783.99)):
            on = (t >= i * 0.4) & (t < i * 0.4 + 0.3)
            wave[on] = np.sin(2 * math.pi * freq * t[on])
    fade = np.minimum(1.0, np.minimum(t, duration - t) / 0.01)
    return (0.5 * wave * fade).astype(np.float32)


def write_audio_demo(folder: Path) -> Path:
    """mllm_audio_demo.json and its wav clips; returns the JSON file."""
    import soundfile

    media = folder / MEDIA_FOLDER
    media.mkdir(parents=True, exist_ok=True)
    for name, kind in (("1.wav", "tone"), ("2.wav", "sweep"), ("3.wav", "notes")):
        soundfile.write(media / name, _sound(kind), AUDIO_RATE, subtype="PCM_16")
    return _write_rows(folder, "audios", AUDIO_ROWS)


# -- the datasets -----------------------------------------------------------------------------------
def _write_rows(folder: Path, kind: str, rows: list[tuple[list[dict[str, str]], list[str]]]) -> Path:
    data = [{"messages": messages, kind: [f"{MEDIA_FOLDER}/{name}" for name in names]} for messages, names in rows]
    path = folder / f"{COLUMN[kind]}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def register(folder: Path, kinds: tuple[str, ...]) -> Path:
    """Add the demos of `kinds` to folder/dataset_info.json, keeping every other entry."""
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    for kind in kinds:
        info[COLUMN[kind]] = _entry(kind)
    info_path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info_path


WRITERS = {"images": write_image_demo, "videos": write_video_demo, "audios": write_audio_demo}


def write_demos(folder: Path, kinds: tuple[str, ...] = ("images", "videos", "audios")) -> dict[str, Path]:
    """Write the demo datasets of `kinds` into `folder` and register them; {dataset name: its JSON file}."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {COLUMN[kind]: WRITERS[kind](folder) for kind in kinds}
    register(folder, kinds)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(REPO / "data"), help="dataset folder (default: data/)")
    args = parser.parse_args(argv)
    for name, path in write_demos(Path(args.folder)).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
