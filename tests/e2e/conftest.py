"""The README's quickstart, run once for the session: `lf train examples/quickstart.yaml` on the real
SmolLM2, then `lf export ... export_format=gguf` of the result, both as a user types them. The quickstart
test asks the tuned model its name; the export test checks the GGUF file against the merged model."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LF = str(Path(sys.executable).parent / "lf")


@dataclass(frozen=True)
class Quickstart:
    adapter: Path
    """output_dir of `lf train examples/quickstart.yaml`."""
    gguf_dir: Path
    """export_dir of `lf export adapter_name_or_path=<adapter> export_format=gguf export_quantization=f16`."""
    train_stdout: str
    export_stdout: str


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory) -> Quickstart:
    root = tmp_path_factory.mktemp("quickstart")
    adapter, exported = root / "quickstart", root / "lumen-gguf"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # LF_CACHE_HOME: the session's (tests/conftest.py)
    train = subprocess.run([LF, "train", "examples/quickstart.yaml", f"output_dir={adapter}"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    export = subprocess.run([LF, "export", f"adapter_name_or_path={adapter}", f"export_dir={exported}",
                             "export_format=gguf", "export_quantization=f16"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    return Quickstart(adapter, exported, train.stdout, export.stdout)
