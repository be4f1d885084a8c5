"""Files LF writes are complete or absent: a temporary name in the same folder, then a rename.

Temporary files and folders are created private (0600/0700) by `tempfile`; before the rename they get
the permissions the user's umask gives any new file (0644/0755 under the usual 022), so a server
running as another user can read what `lf train` or `lf export` wrote.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lf_data.errors import LFError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


class StorageError(LFError):
    """A file could not be written (disk full, read-only folder, no permission)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path: str | os.PathLike) -> Path:
    """Give a private temporary file or folder the permissions the umask gives new ones."""
    path = Path(path)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~_umask())
    return path


def share_tree(folder: str | os.PathLike) -> Path:
    """`shareable` for a folder and everything in it (safetensors writes its files private too)."""
    folder = Path(folder)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            shareable(path)
    return shareable(folder)


def storage_error(err: OSError, where: str | os.PathLike, kept: str = "") -> StorageError | OSError:
    """One line for a write that failed for lack of space or permission (other errors unchanged)."""
    if err.errno not in NO_SPACE:
        return err
    return StorageError(f"could not write to {str(where)!r}: {os.strerror(err.errno)}. Free some space or choose "
                        f"a writable folder.{' ' + kept if kept else ''}")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(shareable(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_yaml_atomic(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    import yaml

    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
