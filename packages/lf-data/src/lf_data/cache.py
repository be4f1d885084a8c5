"""A content-addressed cache of tokenised datasets.

The key hashes everything the result depends on: the bytes of the data files, the tokenizer (its
serialised vocabulary, special tokens and chat template), the template's rendering, the
preprocessing options and the lf-data version. Equal inputs reuse the cache; any change misses.
Entries are written under a temporary name and renamed, so a crash never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_data import __version__
from lf_data.dataset_info import DatasetAttr

if TYPE_CHECKING:
    from datasets import Dataset

META = "lf_cache_meta.json"


def cache_root() -> Path:
    return Path(os.environ.get("LF_CACHE_HOME") or Path.home() / ".cache" / "lf") / "datasets"


def _file_digest(path: str, digest: Any) -> None:
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for attr in ("bos_token", "eos_token", "pad_token", "chat_template", "padding_side"):
        digest.update(repr(getattr(tokenizer, attr, None)).encode())
    digest.update(type(tokenizer).__name__.encode())
    return digest.hexdigest()


def cache_key(attrs: list[DatasetAttr], tokenizer: Any, template: Any, options: dict[str, Any],
              hub_fingerprints: dict[str, str] | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(f"lf-data {__version__}\n".encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    for attr in attrs:
        digest.update(json.dumps(attr.__dict__, sort_keys=True, default=str).encode())
        if attr.source == "file":
            from lf_data.loading import data_files

            for path in data_files(attr)[1]:  # name and size first: files of a folder cannot run together
                digest.update(f"{Path(path).name}\0{Path(path).stat().st_size}\0".encode())
                _file_digest(path, digest)
        else:
            digest.update((hub_fingerprints or {}).get(attr.name, "").encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    digest.update(repr(template).encode())
    return digest.hexdigest()[:24]


def load_cached(path: Path, key: str | None = None) -> tuple[dict[str, Dataset], dict[str, Any]] | None:
    """The datasets and statistics stored at `path`, or None when absent (or for another key)."""
    from datasets import load_from_disk

    meta_path = path / META
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if key is not None and meta.get("key") != key:
        return None
    return {name: load_from_disk(str(path / name)) for name in meta["splits"]}, meta


def save_cached(path: Path, datasets: dict[str, Dataset], meta: dict[str, Any]) -> None:
    if path.exists() and not (path / META).is_file() and (not path.is_dir() or any(path.iterdir())):
        from lf_data.errors import ConfigError

        raise ConfigError(f"{path} exists and is not an LF tokenised dataset; LF will not replace it. "
                          "Point tokenized_path at a new or empty folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        for name, dataset in datasets.items():
            dataset.save_to_disk(str(tmp / name))
        (tmp / META).write_text(json.dumps({**meta, "splits": list(datasets)}, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
