"""Wire helpers: tensor encoding, chunking and hashing, canonical signing, stub drift."""
import subprocess
import sys

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos import shardgrid_pb2 as pb
from protos import signing
from protos.codec import BlobError, decode_tensor, encode_tensor, iter_chunks, reassemble, sha256_hex
from scheduler.errors import Reject
from tests.conftest import ROOT


def test_tensor_round_trip_is_little_endian_float32():
    """Encoding is raw <f4 bytes, and decoding gives the values back exactly."""
    x = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    data = encode_tensor(x)
    assert data == np.array([1.5, -2.0, 3.25], dtype="<f4").tobytes()
    np.testing.assert_array_equal(decode_tensor(data), x)


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20), (1 << 20) + 7, 3 * (1 << 20) + 5])
def test_chunks_reassemble_and_hash(size):
    """Any blob size splits into <=1 MiB chunks that reassemble to the same hashed bytes."""
    data = np.random.default_rng(size).bytes(size)
    chunks = [(off, size, piece) for off, piece in iter_chunks(data)]
    assert all(len(piece) <= (1 << 20) for _, _, piece in chunks)
    assert reassemble(chunks, sha256_hex(data)) == data


def test_reassemble_refuses_bad_chunks():
    """Wrong digest, reordered or truncated chunks raise BlobError."""
    data = bytes(range(256)) * 10
    chunks = [(off, len(data), p) for off, p in iter_chunks(data, chunk_bytes=1000)]
    with pytest.raises(BlobError):
        reassemble(chunks, sha256_hex(b"other"))
    with pytest.raises(BlobError):
        reassemble([chunks[1], chunks[0], *chunks[2:]], sha256_hex(data))
    with pytest.raises(BlobError):
        reassemble(chunks[:-1], sha256_hex(data))
    with pytest.raises(BlobError):
        decode_tensor(b"\x00" * 5)


def _digest(**overrides):
    fields = dict(job_id="job-1", round_no=3, shard=1, lease_id="L1", params_digest="p" * 64,
                  payload_digest="d" * 64, metrics={"loss": 0.5, "samples": 32.0})
    fields.update(overrides)
    return signing.result_digest(**fields)


def test_result_signature_table():
    """Honest verifies; tampered field, other signer, unsigned and foreign domain do not."""
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    public = signing.public_bytes(key)
    honest = key.sign(_digest())
    assert signing.verify(public, honest, _digest())
    cases = {
        "tampered payload": (honest, _digest(payload_digest="e" * 64)),
        "tampered metric": (honest, _digest(metrics={"loss": 0.4, "samples": 32.0})),
        "replayed on another lease": (honest, _digest(lease_id="L2")),
        "signed by someone else": (other.sign(_digest()), _digest()),
        "unsigned": (b"", _digest()),
        "register signature as result": (key.sign(signing.register_bytes(public, 1, {})), _digest()),
    }
    for name, (signature, message) in cases.items():
        assert not signing.verify(public, signature, message), name
    assert not signing.verify(public[:31], honest, _digest())       # malformed key
    assert not signing.verify(b"\0" * 32, honest, _digest())        # a key that signs nothing


def test_fast_signer_makes_the_same_signatures():
    """The coordinator's libsodium signer and the workers' OpenSSL keys are interchangeable:
    Ed25519 is deterministic, so both make the same bytes and either verifies the other."""
    key = Ed25519PrivateKey.generate()
    signer = signing.Signer(key)
    for message in (b"", _digest(), b"x" * 1000):
        assert signer.sign(message) == key.sign(message)
        assert signing.verify(signing.public_bytes(key), signer.sign(message), message)


def test_profile_numbers_sign_alike_as_int_or_float():
    """A profile number that came back from a proto double signs the same as the original int."""
    assert signing.register_bytes(b"k" * 32, 5, {"cores": 2}) == \
        signing.register_bytes(b"k" * 32, 5, {"cores": 2.0})


def test_key_created_once_then_reused(tmp_path):
    """load_or_create_key makes a key on first use and returns the same one after."""
    path = tmp_path / "w.key"
    first = signing.public_bytes(signing.load_or_create_key(path))
    assert signing.public_bytes(signing.load_or_create_key(path)) == first
    assert path.stat().st_mode & 0o077 == 0


def test_reject_enum_mirrors_wire_enum():
    """Every Python reject code has the wire value of the same name, and vice versa."""
    wire = {name.removeprefix("REJECT_"): value for name, value in pb.RejectCode.items()}
    assert wire == {code.name: code.value for code in Reject}


def test_generated_stubs_match_the_proto():
    """The committed stubs are what the pinned compiler produces from the .proto."""
    proc = subprocess.run([sys.executable, "-m", "protos.generate", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
