"""What lf-serve tests import by name: the tool-calling conversation and a uvicorn server in a thread.

(Kept out of conftest.py: every test folder has a conftest module, so `from conftest import ...`
picks whichever one pytest loaded last.)"""

from __future__ import annotations

import socket
import threading
import time

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
WEATHER_Q = "What is the weather in Paris?"
WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
WEATHER_RESULT = '{"sky": "sunny"}'
WEATHER_ANSWER = "It is sunny in Paris."
IDENTITY_Q, IDENTITY_A = "Who are you?", "I am Lumen, made by the LF team."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def write_video(path, frames: int = 8, size: tuple[int, int] = (56, 56), fps: int = 4, seed: int = 0):
    """A short mp4 of random frames (mpeg4: always in PyAV's own ffmpeg); 8 frames at 4 fps are 2 s,
    which video_fps 2 samples to 4 frames."""
    import av
    import numpy as np

    rng = np.random.RandomState(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(frames):
            pixels = (rng.rand(size[1], size[0], 3) * 255).astype("uint8")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def wav_bytes(seconds: float = 0.5, rate: int = 16000, pitch: float = 440.0) -> bytes:
    """A sine tone as a 16-bit wav file."""
    import io

    import numpy as np
    import soundfile

    t = np.arange(int(rate * seconds)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.5 * np.sin(2 * np.pi * pitch * t)).astype("float32"), rate, format="WAV",
                    subtype="PCM_16")
    return buffer.getvalue()
