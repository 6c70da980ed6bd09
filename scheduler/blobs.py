"""Content-addressed blobs: parameters, optimizer state and accepted updates.

A blob's name is the SHA-256 of its bytes, so a write is idempotent and a reader can always check
what it got. Small blobs are rows of the database; large ones are files, written to a temporary
name and renamed into place, so a coordinator killed mid-write leaves no half blob under a real
name.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from protos.codec import decode_tensor, encode_tensor, sha256_hex
from scheduler.errors import BlobNotFound


# Blobs up to this size (updates of small models, their parameters) live in the database's
# `blobs` table: a file per 40-byte update cost a file creation per result, the coordinator's
# largest per-task cost at 1,000 workers. Larger ones are files, written outside any lock.
SMALL_BLOB_BYTES = 64 * 1024


# Large blobs written or read lately stay in memory up to this many bytes (blobs are immutable,
# so a copy never goes stale): every worker fetches the round's new parameters right after they
# were written, and the round reads back the updates it just accepted. Re-reading them from
# files cost the coordinator ~13 ms of CPU a round on a 1.2 MB model.
RECENT_BYTES = 64 * 2**20
# Charged per remembered blob on top of its size: tens of thousands of 40-byte updates must not
# hold far more memory than the budget says.
ENTRY_COST_BYTES = 1024

# Rows read per query when many blobs are fetched at once (SQLite's default variable limit
# is 32,766; this keeps each statement small).
ROWS_PER_QUERY = 500


class Rows(Protocol):
    def one(self, sql: str, args: tuple = ()) -> Any: ...

    def query(self, sql: str, args: tuple = ()) -> list[Any]: ...

    def execute(self, sql: str, args: tuple = ()) -> None: ...


class BlobStore:
    def __init__(self, root: str | Path, rows: Rows | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.rows = rows
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_bytes = 0
        self._recent_lock = threading.Lock()

    def _remember(self, digest: str, data: bytes) -> None:
        if len(data) > RECENT_BYTES // 4:
            return  # a huge blob would evict everything else for one reader
        with self._recent_lock:
            if digest in self._recent:
                self._recent.move_to_end(digest)
                return
            self._recent[digest] = data
            self._recent_bytes += len(data) + ENTRY_COST_BYTES
            while self._recent_bytes > RECENT_BYTES:
                _, old = self._recent.popitem(last=False)
                self._recent_bytes -= len(old) + ENTRY_COST_BYTES

    def _recalled(self, digest: str) -> bytes | None:
        with self._recent_lock:
            data = self._recent.get(digest)
            if data is not None:
                self._recent.move_to_end(digest)
            return data

    def is_small(self, size: int) -> bool:
        return self.rows is not None and size <= SMALL_BLOB_BYTES

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise BlobNotFound(f"not a blob digest: {digest[:80]!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store `data` under its SHA-256. A small blob joins the caller's open transaction.
        `digest`: the caller already checked the data against it (a result's payload), so it is
        not hashed twice."""
        digest = digest or sha256_hex(data)
        if self.is_small(len(data)):
            self.rows.execute("INSERT OR IGNORE INTO blobs(digest, data) VALUES(?, ?)",
                              (digest, data))
            return digest
        path = self._path(digest)
        self._remember(digest, data)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return digest

    def get_cheap(self, digest: str) -> bytes | None:
        """The blob if it is had without file I/O (read lately, or a database row), else None.
        A round's parameters are read once per lease: at a round barrier a thousand times."""
        recalled = self._recalled(digest)
        if recalled is not None or self.rows is None:
            return recalled
        row = self.rows.one("SELECT data FROM blobs WHERE digest=?", (digest,))
        if row is None:
            return None
        data = bytes(row[0])
        self._remember(digest, data)
        return data

    def get(self, digest: str) -> bytes:
        cheap = self.get_cheap(digest)
        if cheap is not None:
            return cheap
        try:
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest[:12]}...") from None
        self._remember(digest, data)
        return data

    def put_tensor(self, array: np.ndarray) -> str:
        return self.put(encode_tensor(array))

    def get_tensor(self, digest: str) -> np.ndarray:
        return decode_tensor(self.get(digest))

    def get_tensors(self, digests: list[str]) -> np.ndarray:
        """The tensors stacked as rows, small ones read ROWS_PER_QUERY per query: closing a round
        of 4,000 shards one lookup at a time held the database lock and the GIL for ~0.2 s,
        which every worker's call felt."""
        found: dict[str, bytes] = {}
        if self.rows is not None:
            unique = list(dict.fromkeys(digests))
            for start in range(0, len(unique), ROWS_PER_QUERY):
                part = unique[start:start + ROWS_PER_QUERY]
                marks = ",".join("?" * len(part))
                for digest, data in self.rows.query(
                        f"SELECT digest, data FROM blobs WHERE digest IN ({marks})", tuple(part)):
                    found[digest] = bytes(data)
        return np.stack([decode_tensor(found[d] if d in found else self.get(d)) for d in digests])

    def exists(self, digest: str) -> bool:
        """On disk (a row or a file), whatever memory holds: what an audit must know."""
        if self.rows is not None and self.rows.one("SELECT 1 FROM blobs WHERE digest=?",
                                                   (digest,)) is not None:
            return True
        return self._path(digest).exists()
