"""Reading raw inputs: a local ``.json`` / ``.json.gz`` file (with an optional checksum) or rows
of a Hugging Face ``datasets`` split. Readers in ``squad.py`` and ``hotpot.py`` parse what these
return; every failure here is a :class:`DataError` that names the file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from latentwire.data.schema import DataError


def read_json_bytes(path: str | Path) -> bytes:
    """The JSON bytes of ``path``, gunzipped when the name ends in ``.gz``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from e
    return raw


def load_json(path: str | Path, sha256: str | None = None) -> Any:
    """Parse the JSON in ``path``; if ``sha256`` is given it must match the decompressed bytes."""
    data = read_json_bytes(path)
    if sha256 is not None:
        # The checksum is over the decompressed JSON so re-compressing a file does not change it.
        got = hashlib.sha256(data).hexdigest()
        if got != sha256.lower():
            raise DataError(f"{path}: sha256 mismatch: expected {sha256.lower()}, got {got}")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e


def load_hf_rows(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """All rows of ``datasets.load_dataset(name, config, split=split)`` as plain dicts.

    Needs network access and the optional ``datasets`` package, imported here so that offline users
    never need it.
    """
    try:
        import datasets  # optional dependency, only for hub sources
    except ImportError as e:
        raise DataError(
            f"hf:{name}: loading from the Hugging Face hub needs the 'datasets' package "
            "(pip install datasets); or download the JSON and set 'path' instead"
        ) from e
    return [dict(row) for row in datasets.load_dataset(name, config, split=split)]


def require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` checked to be a ``kind``; strings must be non-blank. ``where`` prefixes errors."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DataError(f"{where}: field {key!r} has type {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value
