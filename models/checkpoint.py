"""Checkpoint files: safetensors with the registry entry embedded, sha256-checked, never pickled.

A checkpoint is one ``.safetensors`` file.  Its header metadata holds the registry entry as JSON
under the key ``"galmoss_auto"``, so a file copied anywhere still says what it is (architecture,
input normalisation, output transforms, training, evaluation).  The entry keys ``sha256`` and
``size`` describe the file itself and so cannot be inside it: they are dropped before embedding
and live only in registries.

Loading goes through :func:`safetensors.torch.load_file`, which reads raw little-endian tensor
bytes and a JSON header; no pickle is involved anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

__all__ = [
    "CheckpointError", "ChecksumError", "METADATA_KEY", "FILE_KEYS",
    "save_checkpoint", "load_checkpoint", "read_entry", "sha256_file",
]

#: safetensors metadata key that holds the embedded registry entry (JSON text).
METADATA_KEY = "galmoss_auto"
#: entry keys that describe the file itself; never embedded.
FILE_KEYS = ("sha256", "size")
#: tensors stored under this prefix are a reference input/output pair, not weights.
REFERENCE_PREFIX = "__reference__."

_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a galmoss-auto checkpoint (the message names it)."""


class ChecksumError(CheckpointError):
    """A file whose sha256 differs from the one it was expected to have."""

    def __init__(self, path, expected: str, actual: str, what: str = "file"):
        self.path, self.expected, self.actual = str(path), expected, actual
        super().__init__(f"{what} {path}: sha256 {actual} does not match the expected {expected}; "
                         "the file is corrupt, truncated or a different version (refused)")


def sha256_file(path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _plain(state_dict: dict, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share storage)."""
    out = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"state_dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        t = value.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        # a private copy: safetensors refuses views and tensors sharing one storage
        t = t.contiguous().clone()
        out[key] = t
    return out


def save_checkpoint(path, state_dict: dict, entry: dict, *, dtype: torch.dtype | None = None,
                    reference: dict | None = None) -> str:
    """Write ``state_dict`` and ``entry`` to a safetensors file; return its sha256 (hex).

    Parameters
    ----------
    path : str or Path
        Destination ``.safetensors`` file; written to a temporary file beside it and renamed, so
        a reader never sees half a file.
    state_dict : dict[str, Tensor]
        Network weights (``module.state_dict()``).  Copied to the CPU; tensors that share storage
        are stored separately.
    entry : dict
        Registry entry (JSON-serialisable).  Embedded without its ``sha256`` and ``size`` keys.
    dtype : torch.dtype, optional
        Store floating tensors in this dtype (e.g. ``torch.float16`` to halve the file);
        ``module.load_state_dict`` casts them back to the module's dtype.  The entry records it
        as ``storage_dtype``.
    reference : dict[str, Tensor], optional
        A reference input/output pair (see :mod:`galmoss_auto.models.build`), stored beside the
        weights under the ``__reference__.`` prefix and returned by :func:`load_checkpoint`
        only when asked.
    """
    path = Path(path)
    embedded = {k: v for k, v in entry.items() if k not in FILE_KEYS}
    if dtype is not None:
        embedded["storage_dtype"] = str(dtype).replace("torch.", "")
    try:
        meta = json.dumps(embedded, sort_keys=True)
    except TypeError as exc:
        raise CheckpointError(f"entry for {path} is not JSON-serialisable: {exc}") from exc
    tensors = _plain(state_dict, dtype)
    if any(k.startswith(REFERENCE_PREFIX) for k in tensors):
        raise CheckpointError(f"state_dict keys may not start with {REFERENCE_PREFIX!r}")
    for key, value in _plain(reference or {}, None).items():
        tensors[REFERENCE_PREFIX + key] = value
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={METADATA_KEY: meta, "format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(path)


def _check_header(path: Path) -> dict:
    """Parse the safetensors header (8-byte length + JSON) ourselves, so a pickle or any other
    file is refused with a clear message before a tensor is touched."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: too short to be a safetensors file ({len(head)} bytes)")
            n = int.from_bytes(head, "little")
            if n <= 1 or n > 100_000_000 or n + 8 > path.stat().st_size:
                raise CheckpointError(f"{path}: not a safetensors file (bad header length; pickled "
                                      "torch checkpoints are not accepted)")
            header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON: {exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header


def read_entry(path) -> dict:
    """The registry entry embedded in a checkpoint, read from the header only (no tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    header = _check_header(path)
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{path}: a safetensors file without galmoss-auto metadata "
                              f"(no {METADATA_KEY!r} key); it was not written by save_checkpoint")
    try:
        entry = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: embedded entry is not valid JSON: {exc}") from exc
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: embedded entry is not a JSON object")
    return entry


def load_checkpoint(path, sha256: str | None = None, *, device="cpu", with_reference: bool = False):
    """Read a checkpoint: ``(state_dict, entry)``, or ``(state_dict, entry, reference)``.

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file.
    sha256 : str, optional
        Expected sha256 (hex).  When given, the file is hashed first and refused with
        :class:`ChecksumError` (naming the file and both hashes) on a mismatch.
    device : str or torch.device
        Where the tensors are placed (default CPU).
    with_reference : bool
        Also return the stored reference input/output tensors (empty dict if none).

    Never unpickles: pickled ``torch.save`` files are refused with :class:`CheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise ChecksumError(path, sha256.lower(), actual, what="checkpoint")
    entry = read_entry(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read tensors: {exc}") from exc
    state = {k: v for k, v in tensors.items() if not k.startswith(REFERENCE_PREFIX)}
    if with_reference:
        ref = {k[len(REFERENCE_PREFIX):]: v for k, v in tensors.items() if k.startswith(REFERENCE_PREFIX)}
        return state, entry, ref
    return state, entry
