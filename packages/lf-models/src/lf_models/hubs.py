"""Models from ModelScope or Modelers (openMind) instead of the Hugging Face hub.

`USE_MODELSCOPE_HUB=1` or `USE_OPENMIND_HUB=1` (LlamaFactory's switches, read by
`lf_data.dataset_info` for datasets too) make a hub id in `model_name_or_path` download through
that hub's client into a local snapshot, which then loads like any model folder.
"""

from __future__ import annotations

import importlib
from typing import Any

from lf_data.dataset_info import use_modelscope, use_openmind
from lf_data.errors import ConfigError
from lf_models.args import ModelArguments

MODELSCOPE_INSTALL = "pip install 'lf-models[modelscope]'"
OPENMIND_INSTALL = "pip install openmind-hub"  # no extra: it pins requests, which would hold back the lock


def _client(module: str, variable: str, hub: str, install: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{variable}=1 downloads models from {hub}, which needs its client: {install}.") from None


def _download_error(hub: str, ref: str, err: Exception) -> ConfigError:
    text = " ".join(str(err).split())[:300]
    return ConfigError(f"could not download {ref!r} from {hub}: {type(err).__name__}: {text}. Without network "
                       "access, download it and point model_name_or_path at its folder.")


def download_from_other_hub(model_args: ModelArguments) -> str | None:
    """The local snapshot of a hub model when a ModelScope/Modelers switch is on; None otherwise."""
    ref = model_args.model_name_or_path
    if use_modelscope():
        modelscope = _client("modelscope", "USE_MODELSCOPE_HUB", "ModelScope", MODELSCOPE_INSTALL)
        revision = "master" if model_args.model_revision == "main" else model_args.model_revision  # its default
        try:
            if model_args.ms_hub_token:
                modelscope.HubApi().login(model_args.ms_hub_token)
            return str(modelscope.snapshot_download(ref, revision=revision, cache_dir=model_args.cache_dir))
        except Exception as err:  # network, authentication, missing repository: one line
            raise _download_error("ModelScope", ref, err) from None
    if use_openmind():
        om_hub = _client("openmind_hub", "USE_OPENMIND_HUB", "Modelers (openMind)", OPENMIND_INSTALL)
        try:
            return str(om_hub.snapshot_download(repo_id=ref, revision=model_args.model_revision,
                                                cache_dir=model_args.cache_dir, token=model_args.om_hub_token))
        except Exception as err:
            raise _download_error("Modelers", ref, err) from None
    return None
