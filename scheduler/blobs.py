"""Content-addressed blob directory: parameters, optimizer state and accepted updates.

A blob's name is the SHA-256 of its bytes, so a write is idempotent and a reader can always check
what it got. Writes go to a temporary file and are renamed into place: a coordinator killed
mid-write leaves no half blob under a real name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from protos.codec import decode_tensor, encode_tensor, sha256_hex
from scheduler.errors import BlobNotFound


class BlobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise BlobNotFound(f"not a blob digest: {digest[:80]!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest[:12]}...") from None

    def put_tensor(self, array: np.ndarray) -> str:
        return self.put(encode_tensor(array))

    def get_tensor(self, digest: str) -> np.ndarray:
        return decode_tensor(self.get(digest))

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()
