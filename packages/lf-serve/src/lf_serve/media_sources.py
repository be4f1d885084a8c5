"""Images, videos and sounds named in requests, under one policy: data: URLs (and input_audio's base64)
always; local files only inside `image_dir`; http(s) URLs only with `allow_image_urls`. Each item is
capped in bytes (`image_max_bytes`, `video_max_bytes`, `audio_max_bytes`) and checked from its header
before it is decoded: an image's or a video frame's pixels (`media_max_pixels`, so a small file cannot
unpack into gigabytes), a video's frames, a sound's length. An image must also decode; a video must hold
a decodable video stream; a sound must be readable.

What passes is a `MediaItem`: the bytes, which the engine hands to lf_models.media as a data: URL (the
file is read once, here, so a path cannot change between the check and the read)."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lf_serve.errors import RequestError
from lf_serve.limits import MAX_AUDIO_SECONDS, MAX_VIDEO_DECODED_PIXELS

NOUN = {"images": "image", "videos": "video", "audios": "audio"}
A_NOUN = {"images": "an image", "videos": "a video", "audios": "an audio"}
BYTES_KEY = {"images": "image_max_bytes", "videos": "video_max_bytes", "audios": "audio_max_bytes"}


@dataclass(frozen=True)
class MediaPolicy:
    """Where request media may come from and how large it may be (`lf_serve.args.InferArguments`)."""

    media_dir: str | None = None
    allow_urls: bool = False
    image_max_bytes: int = 20 * 1024 * 1024
    video_max_bytes: int = 64 * 1024 * 1024
    audio_max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_pixels: int = 16 * 1024 * 1024

    @classmethod
    def from_args(cls, infer: Any) -> MediaPolicy:
        return cls(infer.image_dir, infer.allow_image_urls, infer.image_max_bytes, infer.video_max_bytes,
                   infer.audio_max_bytes, max_pixels=infer.media_max_pixels)

    def max_bytes(self, kind: str) -> int:
        return {"images": self.image_max_bytes, "videos": self.video_max_bytes, "audios": self.audio_max_bytes}[kind]


@dataclass(frozen=True)
class MediaItem:
    """One checked item of a request."""

    kind: str
    data: bytes
    what: str
    """How messages name it: "image file 'cat.png'", "a video data: URL" ..."""
    size: tuple[int, int] | None = None
    """Images and videos: (width, height)."""
    frames: int | None = None
    seconds: float | None = None

    @property
    def ref(self) -> str:
        """The item as lf_models.media reads it."""
        return "data:;base64," + base64.b64encode(self.data).decode()


# -- where the bytes come from ------------------------------------------------------------------------
def _from_base64(kind: str, payload: str, what: str, policy: MediaPolicy) -> bytes:
    limit = policy.max_bytes(kind)
    if len(payload) * 3 // 4 > limit:
        raise RequestError(f"{what} is larger than {limit} bytes ({BYTES_KEY[kind]}).", "messages")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{what} holds invalid base64.", "messages") from None


def _from_data_url(kind: str, url: str, policy: MediaPolicy) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise RequestError(f"{A_NOUN[kind]} data: URL must be base64 encoded (data:{NOUN[kind]}/...;base64,...).",
                           "messages")
    return _from_base64(kind, payload, f"{A_NOUN[kind]} data: URL", policy)


def _from_file(kind: str, ref: str, policy: MediaPolicy) -> tuple[bytes, str]:
    noun = NOUN[kind]
    if policy.media_dir is None:
        raise RequestError(f"this server does not read local {noun} files (image_dir is not set); send the {noun} "
                           "as a data: URL.", "messages")
    root = Path(policy.media_dir).resolve()
    path = Path(ref)
    path = (path if path.is_absolute() else root / path).resolve()  # symlinks and .. resolved before the check
    if not path.is_relative_to(root):
        raise RequestError(f"{noun} path is outside the server's image_dir.", "messages")
    if not path.is_file():
        raise RequestError(f"{noun} file {ref!r} does not exist in image_dir.", "messages")
    limit = policy.max_bytes(kind)
    if path.stat().st_size > limit:
        raise RequestError(f"{noun} file {ref!r} is larger than {limit} bytes ({BYTES_KEY[kind]}).", "messages")
    with path.open("rb") as file:  # the size again, as read: the file may have grown since stat
        data = file.read(limit + 1)
    if len(data) > limit:
        raise RequestError(f"{noun} file {ref!r} is larger than {limit} bytes ({BYTES_KEY[kind]}).", "messages")
    return data, f"{noun} file {ref!r}"


def _from_url(kind: str, url: str, policy: MediaPolicy) -> bytes:
    noun = NOUN[kind]
    if not policy.allow_urls:
        raise RequestError(f"this server does not fetch {noun} URLs (allow_image_urls is off); send the {noun} as a "
                           "data: URL.", "messages")
    import urllib.request

    limit = policy.max_bytes(kind)
    try:
        with urllib.request.urlopen(url, timeout=policy.timeout_s) as response:  # noqa: S310 (http(s) only, checked)
            data = response.read(limit + 1)
    except (OSError, ValueError) as err:
        raise RequestError(f"could not fetch {noun} {url!r}: {err}", "messages") from None
    if len(data) > limit:
        raise RequestError(f"{noun} {url!r} is larger than {limit} bytes ({BYTES_KEY[kind]}).", "messages")
    return data


def read_bytes(kind: str, ref: str, policy: MediaPolicy) -> tuple[bytes, str]:
    """(the bytes, how messages name the item) of one media reference of a request, under the policy."""
    noun = NOUN[kind]
    if ref.startswith("data:"):
        return _from_data_url(kind, ref, policy), f"{A_NOUN[kind]} data: URL"
    scheme = urlparse(ref).scheme.lower()
    if scheme in ("http", "https"):
        return _from_url(kind, ref, policy), f"{noun} {ref!r}"
    if scheme == "file":
        return _from_file(kind, unquote(urlparse(ref).path), policy)
    if scheme and len(scheme) > 1:
        raise RequestError(f"{noun} URL scheme {scheme!r} is not supported; use data:, http(s) or a path.", "messages")
    return _from_file(kind, ref, policy)


# -- what the bytes must be ---------------------------------------------------------------------------
def check_image(data: bytes, what: str, policy: MediaPolicy) -> MediaItem:
    """An image whose header is within media_max_pixels and whose pixels decode."""
    from PIL import Image, UnidentifiedImageError

    limit = f"this server's limit of {policy.max_pixels} (media_max_pixels)"
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only: the size is known, no pixel decoded
            width, height = image.size
            if width * height > policy.max_pixels:
                raise RequestError(f"{what} is {width}x{height} = {width * height} pixels, over {limit}.", "messages")
            image.load()
    except Image.DecompressionBombError:
        raise RequestError(f"{what} has more pixels than {limit}.", "messages") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise RequestError(f"{what} is not a readable image ({type(err).__name__}).", "messages") from None
    return MediaItem("images", data, what, size=(width, height))


def check_video(data: bytes, what: str, policy: MediaPolicy) -> MediaItem:
    """A video whose frames (counted from its packets, none decoded) are each within media_max_pixels and
    together within MAX_VIDEO_DECODED_PIXELS, and whose first frame decodes."""
    try:
        import av
    except ImportError:
        raise RequestError("this server cannot read videos (the av package is missing: pip install "
                           "'lf-models[vision]').", "messages") from None
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise RequestError(f"{what} holds no video stream.", "messages")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > policy.max_pixels:
                raise RequestError(f"{what} is {width}x{height} = {width * height} pixels a frame, over this "
                                   f"server's limit of {policy.max_pixels} (media_max_pixels).", "messages")
            frames = sum(1 for packet in container.demux(stream) if packet.size)
            if frames * width * height > MAX_VIDEO_DECODED_PIXELS:
                raise RequestError(f"{what} has {frames} frames of {width}x{height}, over this server's limit of "
                                   f"{MAX_VIDEO_DECODED_PIXELS} decoded pixels; send a shorter or smaller video.",
                                   "messages")
            rate = float(stream.average_rate or 0)
        with av.open(io.BytesIO(data)) as container:  # opened again, not seeked: some containers cannot seek
            if next(container.decode(video=0), None) is None:
                raise RequestError(f"{what} has no frame that decodes.", "messages")
    except RequestError:
        raise
    except Exception as err:  # noqa: BLE001 -- av raises its own errors for every broken container
        raise RequestError(f"{what} is not a readable video ({type(err).__name__}).", "messages") from None
    return MediaItem("videos", data, what, size=(width, height), frames=frames,
                     seconds=frames / rate if rate else None)


def check_audio(data: bytes, what: str, policy: MediaPolicy) -> MediaItem:
    """A sound file soundfile reads (wav, flac, ogg, mp3) no longer than MAX_AUDIO_SECONDS."""
    try:
        import soundfile
    except ImportError:
        raise RequestError("this server cannot read audio (the soundfile package is missing: pip install "
                           "'lf-models[audio]').", "messages") from None
    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 -- libsndfile's errors differ by format; all mean "unreadable"
        raise RequestError(f"{what} is not a readable sound ({type(err).__name__}); send wav, flac, ogg or mp3.",
                           "messages") from None
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds > MAX_AUDIO_SECONDS:
        raise RequestError(f"{what} lasts {seconds:.0f} s, over this server's limit of {MAX_AUDIO_SECONDS:.0f} s.",
                           "messages")
    return MediaItem("audios", data, what, frames=info.frames, seconds=seconds)


CHECKS = {"images": check_image, "videos": check_video, "audios": check_audio}


def read_media(kind: str, ref: str, policy: MediaPolicy) -> MediaItem:
    """One image, video or sound of a request (a data: URL, a path inside image_dir, an http(s) URL),
    read and checked under the policy."""
    data, what = read_bytes(kind, ref, policy)
    return CHECKS[kind](data, what, policy)


def read_input_audio(payload: str, audio_format: str | None, policy: MediaPolicy) -> MediaItem:
    """OpenAI's input_audio part: base64 bytes of a sound in `format` (wav, mp3 ...)."""
    what = f"an input_audio ({audio_format})" if audio_format else "an input_audio"
    return check_audio(_from_base64("audios", payload, what, policy), what, policy)
