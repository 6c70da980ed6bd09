"""Tensor encoding and chunking, identical on both ends of the wire.

Tensors travel as raw little-endian float32 bytes; blobs are addressed by the SHA-256 of exactly
those bytes and cut into ~1 MiB chunks so no single gRPC message approaches the size limit.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np

CHUNK_BYTES = 1 << 20
# Every message is at most one chunk plus a small header; this limit leaves room for both.
MAX_MESSAGE_BYTES = 8 << 20
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
F32LE = np.dtype("<f4")
ENCODING_F32LE = "f32le"


class BlobError(ValueError):
    """Chunks that do not reassemble into the blob they claim to be."""


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_tensor(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=F32LE).tobytes()


def decode_tensor(data: bytes, expected_len: int | None = None) -> np.ndarray:
    if len(data) % 4:
        raise BlobError(f"{len(data)} bytes is not a whole number of float32 values")
    array = np.frombuffer(data, dtype=F32LE)
    if expected_len is not None and array.size != expected_len:
        raise BlobError(f"tensor has {array.size} values, expected {expected_len}")
    return array.astype(np.float32, copy=False)


def iter_chunks(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(offset, piece) pairs covering `data`; an empty blob still yields one empty chunk."""
    if not data:
        yield 0, b""
        return
    view = memoryview(data)
    for offset in range(0, len(data), chunk_bytes):
        yield offset, bytes(view[offset:offset + chunk_bytes])


def reassemble(chunks: Iterable[tuple[int, int, bytes]], digest: str) -> bytes:
    """Join (offset, total_size, data) chunks in order and check them against `digest`."""
    buffer = bytearray()
    total = None
    for offset, total_size, data in chunks:
        if total is None:
            total = total_size
        if total_size != total or offset != len(buffer):
            raise BlobError(f"chunk at offset {offset} out of order or inconsistent (have {len(buffer)})")
        buffer.extend(data)
        if len(buffer) > total:
            raise BlobError(f"blob longer than its announced {total} bytes")
    if total is None or len(buffer) != total:
        raise BlobError(f"blob truncated: {len(buffer)} of {total} bytes")
    blob = bytes(buffer)
    if sha256_hex(blob) != digest:
        raise BlobError(f"blob does not hash to {digest[:12]}...")
    return blob
