"""`lf train` on LlamaFactory's video and audio demo datasets (`mllm_video_demo`, `mllm_audio_demo`, made by
tools/make_mllm_demo.py): each clip's features reach the audio encoder, each video's sampled frames reach
Qwen2-VL's vision tower, every media token is masked, and bad rows or a model that cannot take the media
stop the run before anything is written."""

import json
from pathlib import Path

import numpy as np
import pytest
from mm_helpers import (
    build_tiny_qwen2_5_omni_thinker,
    build_tiny_qwen2_audio,
    demo_maker,
    hook_modules,
    write_demo_datasets,
)
from train_helpers import losses

from lf_data.cli import main as lf

AUDIO_PAD, VIDEO_PAD = "<|AUDIO|>", "<|video_pad|>"


@pytest.fixture(scope="module")
def tiny_qwen2_audio(tmp_path_factory, tiny_tokenizer_dir):
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"), tiny_tokenizer_dir)


@pytest.fixture
def demo_dir(data_dir):
    return write_demo_datasets(data_dir, ("videos", "audios"))


def run_config(model, dataset, demo_dir, tmp_path, **extra):
    return {"model_name_or_path": str(model), "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
            "dataset": dataset, "dataset_dir": str(demo_dir), "cutoff_len": 512, "output_dir": str(tmp_path / "out"),
            "per_device_train_batch_size": 3, "max_steps": 2, "learning_rate": 1.0e-2, "logging_steps": 1,
            "seed": 0, "report_to": "none", "plot_loss": False, **extra}


def clip_features(model_dir, files):
    """{file: its log-mel features}, computed from the file by the model's own feature extractor."""
    import soundfile
    from transformers import AutoProcessor

    extractor = AutoProcessor.from_pretrained(model_dir).feature_extractor
    out = {}
    for name in files:
        wave, rate = soundfile.read(name, dtype="float32")
        assert rate == extractor.sampling_rate
        out[name] = extractor(wave, sampling_rate=rate, padding="max_length", return_tensors="pt")["input_features"][0]
    return out


def test_audio_sft_feeds_every_clip_to_the_audio_encoder(tiny_qwen2_audio, demo_dir, write_config, monkeypatch,
                                                         tmp_path):
    seen = []  # the input features of each call of the audio encoder

    def record(module, args, kwargs, output):
        seen.append((args[0] if args else kwargs["input_features"]).detach().clone())

    hook_modules(monkeypatch, {"model.audio_tower": record})
    config = run_config(tiny_qwen2_audio, "mllm_audio_demo", demo_dir, tmp_path, template="qwen2_audio")
    assert lf(["train", str(write_config(**config))]) == 0
    out = tmp_path / "out"
    # one batch of the three rows per step: four clips (the last row has two), each the features of its file
    expected = clip_features(tiny_qwen2_audio, sorted(str(p) for p in (demo_dir / "mllm_demo_data").glob("*.wav")))
    assert len(seen) == 2
    for features in seen:
        assert tuple(features.shape) == (4, 32, 200)
        matched = sorted(next(name.rsplit("/", 1)[1] for name, want in expected.items()
                              if np.allclose(row.numpy(), want.numpy(), atol=1e-5)) for row in features)
        assert matched == ["1.wav", "1.wav", "2.wav", "3.wav"]
    run = losses(out)
    assert len(run) == 2 and run[1] < run[0]
    from safetensors.torch import load_file

    adapted = load_file(out / "adapter_model.safetensors")
    assert any("language_model" in key for key in adapted)
    assert not any("audio_tower" in key or "multi_modal_projector" in key for key in adapted)  # encoder stays frozen
    from transformers import AutoProcessor

    assert type(AutoProcessor.from_pretrained(out)).__name__ == "Qwen2AudioProcessor"


def test_audio_tokens_and_the_prompt_are_never_trained(tiny_qwen2_audio, demo_dir):
    from mm_helpers import collated_batch

    tokenizer, rows, batch = collated_batch(tiny_qwen2_audio, "qwen2_audio", "mllm_audio_demo", demo_dir, "qwen2_audio")
    pad, bos, eos = tokenizer.convert_tokens_to_ids([AUDIO_PAD, "<|audio_bos|>", "<|audio_eos|>"])
    # 1 s clips: 100 feature frames -> 25 tokens; 3.wav (1.2 s): 120 frames -> 30 tokens
    per_clip = {"1.wav": 25, "2.wav": 25, "3.wav": 30}
    answers = ["A single steady tone.<|im_end|>\n", "It is rising.<|im_end|>\n",
               "Three short notes.<|im_end|>\nOne steady tone.<|im_end|>\n"]
    assert batch["feature_attention_mask"].sum(-1).tolist() == [100, 100, 120, 100]
    for i, row in enumerate(rows):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        clips = [path.rsplit("/", 1)[1] for path in json.loads(row["audios"])]
        assert ids.count(pad) == sum(per_clip[c] for c in clips)
        assert ids.count(bos) == ids.count(eos) == len(clips)
        assert all(label == -100 for t, label in zip(ids, labels, strict=True) if t in (pad, bos, eos))
        trained = [t for t, label in zip(ids, labels, strict=True) if label != -100]
        assert tokenizer.decode(trained) == answers[i]  # the answers alone, nothing of the prompt or the clips


def test_video_sft_feeds_the_sampled_frames_to_the_vision_tower(tiny_qwen2_vl, demo_dir, write_config, monkeypatch,
                                                                tmp_path):
    seen = []  # (grid_thw rows, patch rows of pixels) per call of the vision tower

    def record(module, args, kwargs, output):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        seen.append((grid.tolist(), (args[0] if args else kwargs["hidden_states"]).detach().clone()))

    hook_modules(monkeypatch, {"model.visual": record})
    # 8 frames at 4 fps (2 s): video_fps 4 asks for 8 frames, video_maxlen caps them at 6 -> 3 temporal patches
    config = run_config(tiny_qwen2_vl, "mllm_video_demo", demo_dir, tmp_path, template="qwen2_vl",
                        video_fps=4.0, video_maxlen=6)
    assert lf(["train", str(write_config(**config))]) == 0
    # four clips a step (the last row has two); 112x84 frames -> a 6x8 patch grid, 3 x 6 x 8 = 144 patch rows
    assert len(seen) == 2
    expected = video_pixels(tiny_qwen2_vl, demo_dir, frames=6)
    for grids, pixels in seen:
        assert grids == [[3, 6, 8]] * 4 and pixels.shape[0] == 4 * 144
        chunks = [pixels[i * 144:(i + 1) * 144].numpy() for i in range(4)]
        matched = sorted(next(name for name, want in expected.items() if np.allclose(chunk, want, atol=1e-4))
                         for chunk in chunks)
        assert matched == ["1.mp4", "1.mp4", "2.mp4", "3.mp4"]
    run = losses(tmp_path / "out")
    assert len(run) == 2 and run[1] < run[0]


def video_pixels(model_dir, demo_dir, frames):
    """{clip: the pixel patches of `frames` evenly spaced frames}, decoded with av and patched by the model's
    own video processor (independently of LF's reader)."""
    import av
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir).video_processor
    out = {}
    for path in sorted((demo_dir / "mllm_demo_data").glob("*.mp4")):
        with av.open(str(path)) as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        picked = np.stack([decoded[i] for i in np.linspace(0, len(decoded) - 1, frames).round().astype(int)])
        out[path.name] = processor(videos=[picked], do_sample_frames=False, return_tensors="pt")[
            "pixel_values_videos"].numpy()
    return out


def test_video_tokens_are_never_trained(tiny_qwen2_vl, demo_dir):
    from transformers import AutoTokenizer

    from lf_data.args import DataArguments
    from lf_data.pipeline import build_dataset
    from lf_models.families import FAMILIES
    from lf_models.media import MediaLimits, load_media_inputs
    from lf_train.collators import MediaCollator, SupervisedCollator

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_vl)
    markers = FAMILIES["qwen2_vl"].markers
    media = load_media_inputs(str(tiny_qwen2_vl), tokenizer, markers, MediaLimits(video_fps=1.0))
    data = build_dataset(DataArguments(dataset=["mllm_video_demo"], dataset_dir=str(demo_dir), template="qwen2_vl",
                                       cutoff_len=512), tokenizer, "sft", media_markers=dict(markers))
    rows = [data.train_dataset[i] for i in range(len(data.train_dataset))]
    batch = MediaCollator(SupervisedCollator(tokenizer.pad_token_id), media)(rows)
    # video_fps 1 on 2 s clips: 2 frames -> one temporal patch of 6 x 8, merged 2 x 2 -> 12 tokens a clip
    assert batch["video_grid_thw"].tolist() == [[1, 6, 8]] * 4
    pad = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    answers = ["From left to right.<|im_end|>\n", "It grows larger.<|im_end|>\n",
               "It is red.<|im_end|>\nYes, it fades from black to white.<|im_end|>\n"]
    for i, row in enumerate(rows):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert ids.count(pad) == 12 * len(json.loads(row["videos"]))
        assert batch["mm_token_type_ids"][i].tolist() == [2 * int(t == pad) for t in ids]
        trained = [t for t, label in zip(ids, labels, strict=True) if label != -100]
        assert tokenizer.decode(trained) == answers[i]


def test_omni_thinker_feeds_images_videos_and_clips_to_its_encoders(tiny_tokenizer_dir, data_dir, write_config,
                                                                     monkeypatch, tmp_path):
    """Qwen2.5-Omni's thinker on the three demo datasets at once, one batch of all eleven rows: the audio
    encoder gets every clip's feature frames, the vision tower every image and every video."""
    model = build_tiny_qwen2_5_omni_thinker(tmp_path / "omni", tiny_tokenizer_dir)
    demo_dir = write_demo_datasets(data_dir)
    clips, grids = [], []

    def on_audio(module, args, kwargs, output):
        clips.append(sorted(kwargs["feature_lens"].tolist()))

    def on_vision(module, args, kwargs, output):
        grids.append(sorted(kwargs.get("grid_thw", args[1] if len(args) > 1 else None).tolist()))

    hook_modules(monkeypatch, {"model.audio_tower": on_audio, "model.visual": on_vision})
    config = run_config(model, "mllm_demo,mllm_video_demo,mllm_audio_demo", demo_dir, tmp_path, template="qwen2_omni",
                        per_device_train_batch_size=11, max_steps=1, video_fps=1.0)
    assert lf(["train", str(write_config(**config))]) == 0
    assert clips == [[100, 100, 100, 120]]  # four clips: 1 s, 1 s, 1 s and 1.2 s of 10 ms frames
    # seven images (84x84 -> 6x6 patches, 112x84 -> 6x8, 84x112 -> 8x6, 112x112 -> 8x8), then the four videos
    images = sorted([[1, 6, 6]] * 2 + [[1, 6, 8]] * 2 + [[1, 8, 6]] * 2 + [[1, 8, 8]])
    assert len(grids) == 2 and grids[0] == images
    # video_fps 1: two frames, one temporal patch; Omni's processor scales frames up to its own minimum of
    # 128 x 28 x 28 pixels (112x84 -> 392x280: 28 x 20 patches)
    assert grids[1] == [[1, 20, 28]] * 4
    from safetensors.torch import load_file

    adapted = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert adapted and all(".language_model." in key for key in adapted)


def rewrite_rows(demo_dir, name, change):
    path = demo_dir / f"{name}.json"
    rows = json.loads(path.read_text())
    change(rows)
    path.write_text(json.dumps(rows))


def test_placeholders_and_clips_that_disagree_stop_the_run(tiny_qwen2_audio, demo_dir, write_config, tmp_path,
                                                           capsys):
    def two_placeholders_one_clip(rows):
        rows[1]["messages"][0]["content"] = "<audio><audio>Is the pitch rising or falling?"

    rewrite_rows(demo_dir, "mllm_audio_demo", two_placeholders_one_clip)
    config = run_config(tiny_qwen2_audio, "mllm_audio_demo", demo_dir, tmp_path, template="qwen2_audio")
    assert lf(["train", str(write_config(**config))]) != 0
    err = capsys.readouterr().err
    assert "mllm_audio_demo.json:1: 1 audios given but the text has 2 <audio> placeholder(s)" in err
    assert not (tmp_path / "out").exists()


def test_a_video_for_an_audio_model_stops_the_run(tiny_qwen2_audio, demo_dir, write_config, tmp_path, capsys):
    config = run_config(tiny_qwen2_audio, "mllm_video_demo", demo_dir, tmp_path, template="qwen2_audio")
    assert lf(["train", str(write_config(**config))]) != 0
    err = capsys.readouterr().err
    assert "dataset 'mllm_video_demo' has videos" in err and "(model_type qwen2_audio)" in err
    assert "takes audios only" in err and "would train on the placeholder text" in err
    assert not (tmp_path / "out").exists()


def test_the_demo_datasets_are_the_generators(tmp_path):
    """data/ holds what tools/make_mllm_demo.py writes: the same rows and dataset_info.json entries, every
    media file it names, and nothing large."""
    maker = demo_maker()
    written = maker.write_demos(tmp_path)
    data = Path(__file__).resolve().parents[2] / "data"
    info = json.loads((data / "dataset_info.json").read_text())
    made = json.loads((tmp_path / "dataset_info.json").read_text())
    assert {"identity", "identity_pref", "identity_kto", "identity_text"} <= set(info)
    for name, path in written.items():
        assert info[name] == made[name]
        rows = json.loads((data / path.name).read_text())
        assert rows == json.loads(path.read_text())
        for row in rows:
            for kind in ("images", "videos", "audios"):
                for ref in row.get(kind, []):
                    assert (data / ref).is_file(), ref
    assert sum(p.stat().st_size for p in (data / "mllm_demo_data").iterdir()) < 300_000
