"""Content-addressed blobs: parameters, optimizer state and accepted updates.

A blob's name is the SHA-256 of its bytes, so a write is idempotent and a reader can always check
what it got. Small blobs are rows of the database; large ones are files, written to a temporary
name and renamed into place, so a coordinator killed mid-write leaves no half blob under a real
name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from protos.codec import decode_tensor, encode_tensor, sha256_hex
from scheduler.errors import BlobNotFound


# Blobs up to this size (updates of small models, their parameters) live in the database's
# `blobs` table: a file per 40-byte update cost a file creation per result, the coordinator's
# largest per-task cost at 1,000 workers. Larger ones are files, written outside any lock.
SMALL_BLOB_BYTES = 64 * 1024


class Rows(Protocol):
    def one(self, sql: str, args: tuple = ()) -> Any: ...

    def execute(self, sql: str, args: tuple = ()) -> None: ...


class BlobStore:
    def __init__(self, root: str | Path, rows: Rows | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.rows = rows

    def is_small(self, size: int) -> bool:
        return self.rows is not None and size <= SMALL_BLOB_BYTES

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise BlobNotFound(f"not a blob digest: {digest[:80]!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store `data` under its SHA-256. A small blob joins the caller's open transaction."""
        digest = sha256_hex(data)
        if self.is_small(len(data)):
            self.rows.execute("INSERT OR IGNORE INTO blobs(digest, data) VALUES(?, ?)",
                              (digest, data))
            return digest
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return digest

    def get_small(self, digest: str) -> bytes | None:
        """The blob if it is kept in the database (a cheap lookup), else None."""
        if self.rows is None:
            return None
        row = self.rows.one("SELECT data FROM blobs WHERE digest=?", (digest,))
        return None if row is None else bytes(row[0])

    def get(self, digest: str) -> bytes:
        small = self.get_small(digest)
        if small is not None:
            return small
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest[:12]}...") from None

    def put_tensor(self, array: np.ndarray) -> str:
        return self.put(encode_tensor(array))

    def get_tensor(self, digest: str) -> np.ndarray:
        return decode_tensor(self.get(digest))

    def exists(self, digest: str) -> bool:
        return self.get_small(digest) is not None or self._path(digest).exists()
