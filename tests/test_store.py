"""Group commit in the store: the event loop's writes share one COMMIT, a failed operation undoes
only itself, and any other thread's transaction commits the group first."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from scheduler.store import Store


def _meta_keys(path) -> set[str]:
    """What another connection (a restarted coordinator) would find on disk."""
    with sqlite3.connect(path) as other:
        return {row[0] for row in other.execute("SELECT key FROM meta")}


def test_group_commit_makes_writes_durable_together(tmp_path):
    store = Store(tmp_path / "state.db")
    store.group_commit_for(threading.get_ident())
    store.set_meta("a", b"1")
    store.set_meta("b", b"2")
    assert _meta_keys(store.path) == set()       # not durable yet: no reply may claim them
    assert store.get_meta("a") == b"1"           # but this connection sees its own writes
    store.commit_group()
    assert _meta_keys(store.path) == {"a", "b"}
    store.close()


def test_failed_operation_undoes_only_itself(tmp_path):
    store = Store(tmp_path / "state.db")
    store.group_commit_for(threading.get_ident())
    store.set_meta("kept", b"1")
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            db.execute("INSERT INTO meta(key, value) VALUES('undone', x'00')")
            raise RuntimeError("the check failed half way")
    store.commit_group()
    assert _meta_keys(store.path) == {"kept"}
    store.close()


def test_another_threads_transaction_commits_the_group_first(tmp_path):
    store = Store(tmp_path / "state.db")
    store.group_commit_for(threading.get_ident())
    store.set_meta("from-loop", b"1")
    other = threading.Thread(target=store.set_meta, args=("from-driver", b"2"))
    other.start()
    other.join()
    assert _meta_keys(store.path) == {"from-loop", "from-driver"}
    store.close()


def test_many_tensors_read_at_once_small_and_large(tmp_path, monkeypatch):
    """get_tensors stacks small blobs (rows, read in batches) and large ones (files) in the order
    asked, repeats included, exactly as one-by-one reads would."""
    import numpy as np

    from scheduler import blobs as blob_module
    from scheduler.blobs import BlobStore

    monkeypatch.setattr(blob_module, "ROWS_PER_QUERY", 3)  # several batches from 7 small blobs
    store = Store(tmp_path / "s.db")
    try:
        blobs = BlobStore(tmp_path / "blobs", store)
        rng = np.random.default_rng(0)
        small = [rng.standard_normal(10).astype(np.float32) for _ in range(7)]
        large = rng.standard_normal(10).astype(np.float32)
        with store.transaction():
            digests = [blobs.put_tensor(x) for x in small]
        monkeypatch.setattr(blob_module, "SMALL_BLOB_BYTES", 8)  # the next one goes to a file
        large_digest = blobs.put_tensor(large)
        assert (tmp_path / "blobs" / large_digest[:2] / large_digest).exists()
        order = [digests[3], large_digest, *digests, digests[3]]
        stacked = blobs.get_tensors(order)
        assert np.array_equal(stacked, np.stack([blobs.get_tensor(d) for d in order]))
        assert np.array_equal(stacked[1], large) and np.array_equal(stacked[0], small[3])
    finally:
        store.close()


def test_recent_large_blobs_are_served_from_memory_within_a_budget(tmp_path, monkeypatch):
    """Blobs are immutable, so recently written or read large ones are kept in memory (the
    round's parameters are fetched by every worker right after they are written), up to
    RECENT_BYTES, oldest evicted first; a payload hashed by the caller is stored under its
    digest without hashing again."""
    import os

    from protos.codec import sha256_hex
    from scheduler import blobs as blob_module
    from scheduler.blobs import BlobStore
    from scheduler.errors import BlobNotFound

    monkeypatch.setattr(blob_module, "SMALL_BLOB_BYTES", 8)
    monkeypatch.setattr(blob_module, "RECENT_BYTES", 400)
    monkeypatch.setattr(blob_module, "ENTRY_COST_BYTES", 0)
    blobs = BlobStore(tmp_path / "blobs")
    first, second, third = (os.urandom(100) for _ in range(3))
    digests = [blobs.put(first), blobs.put(second, sha256_hex(second)), blobs.put(third)]
    assert digests == [sha256_hex(x) for x in (first, second, third)]
    for digest in digests:
        (tmp_path / "blobs" / digest[:2] / digest).unlink()   # only memory has them now
    assert blobs.get(digests[0]) == first and blobs.get(digests[2]) == third
    blobs.put(os.urandom(100))
    blobs.put(os.urandom(100))                                 # 500 bytes: the oldest goes
    with pytest.raises(BlobNotFound):
        blobs.get(digests[1])                                  # least recently used: evicted
    assert blobs.get(digests[2]) == third


def test_small_blobs_read_again_come_from_memory_and_count_against_the_budget(tmp_path,
                                                                                 monkeypatch):
    """A small blob read from its row is kept in memory (a round's parameters are read once per
    lease); each kept blob costs ENTRY_COST_BYTES on top of its size, so thousands of tiny
    updates cannot outgrow the budget."""
    from scheduler import blobs as blob_module
    from scheduler.store import Store

    monkeypatch.setattr(blob_module, "RECENT_BYTES", 4 * (blob_module.ENTRY_COST_BYTES + 40))
    store = Store(tmp_path / "s.db")
    blobs = blob_module.BlobStore(tmp_path / "blobs", store)
    with store.transaction():
        digests = [blobs.put(bytes([i]) * 40) for i in range(10)]
    for digest in digests:
        assert blobs.get_cheap(digest) is not None
    assert len(blobs._recent) == 4                          # the budget, not the count read
    store.execute("DELETE FROM blobs WHERE digest=?", (digests[-1],))
    assert blobs.get_cheap(digests[-1]) == bytes([9]) * 40  # served from memory
    store.close()
