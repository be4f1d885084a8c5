"""Images named in requests: data: URLs always; local files only inside `image_dir`; http(s) URLs
only with `allow_image_urls`. Each is size-limited in bytes and in pixels (read from the header before
any pixel is decoded, so a small file cannot unpack into gigabytes) and must decode as an image."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lf_serve.errors import RequestError


@dataclass(frozen=True)
class ImagePolicy:
    image_dir: str | None = None
    allow_urls: bool = False
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_pixels: int = 16 * 1024 * 1024


def _decode(data: bytes, what: str, policy: ImagePolicy) -> Any:
    from PIL import Image, UnidentifiedImageError

    limit = f"this server's limit of {policy.max_pixels} (image_max_pixels)"
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only: the size is known, no pixel decoded yet
        width, height = image.size
        if width * height > policy.max_pixels:
            raise RequestError(f"{what} is {width}x{height} = {width * height} pixels, over {limit}.", "messages")
        image.load()
        return image.convert("RGB")
    except Image.DecompressionBombError:
        raise RequestError(f"{what} has more pixels than {limit}.", "messages") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise RequestError(f"{what} is not a readable image ({type(err).__name__}).", "messages") from None


def _from_data_url(url: str, policy: ImagePolicy) -> Any:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise RequestError("an image data: URL must be base64 encoded (data:image/png;base64,...).", "messages")
    if len(payload) * 3 // 4 > policy.max_bytes:
        raise RequestError(f"an image is larger than {policy.max_bytes} bytes.", "messages")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("an image data: URL holds invalid base64.", "messages") from None
    return _decode(data, "an image data: URL", policy)


def _from_file(ref: str, policy: ImagePolicy) -> Any:
    if policy.image_dir is None:
        raise RequestError("this server does not read local image files (image_dir is not set); send the image "
                           "as a data: URL.", "messages")
    root = Path(policy.image_dir).resolve()
    path = Path(ref)
    path = (path if path.is_absolute() else root / path).resolve()  # symlinks and .. resolved before the check
    if not path.is_relative_to(root):
        raise RequestError("image path is outside the server's image_dir.", "messages")
    if not path.is_file():
        raise RequestError(f"image file {ref!r} does not exist in image_dir.", "messages")
    if path.stat().st_size > policy.max_bytes:
        raise RequestError(f"image file {ref!r} is larger than {policy.max_bytes} bytes.", "messages")
    return _decode(path.read_bytes(), f"image file {ref!r}", policy)


def _from_url(url: str, policy: ImagePolicy) -> Any:
    if not policy.allow_urls:
        raise RequestError("this server does not fetch image URLs (allow_image_urls is off); send the image as a "
                           "data: URL.", "messages")
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=policy.timeout_s) as response:  # noqa: S310 (http(s) only, checked)
            data = response.read(policy.max_bytes + 1)
    except (OSError, ValueError) as err:
        raise RequestError(f"could not fetch image {url!r}: {err}", "messages") from None
    if len(data) > policy.max_bytes:
        raise RequestError(f"image {url!r} is larger than {policy.max_bytes} bytes.", "messages")
    return _decode(data, f"image {url!r}", policy)


def load_image(ref: str, policy: ImagePolicy) -> Any:
    """A PIL image for one image reference of a request, under the server's policy."""
    if ref.startswith("data:"):
        return _from_data_url(ref, policy)
    scheme = urlparse(ref).scheme.lower()
    if scheme in ("http", "https"):
        return _from_url(ref, policy)
    if scheme == "file":
        return _from_file(unquote(urlparse(ref).path), policy)
    if scheme and len(scheme) > 1:
        raise RequestError(f"image URL scheme {scheme!r} is not supported; use data:, http(s) or a path.", "messages")
    return _from_file(ref, policy)
