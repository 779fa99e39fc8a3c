"""`prefetch`: the same batches in the same order, errors and early exits carried across the thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from monosemantic.activations.prefetch import prefetch
from monosemantic.activations.store import open_activations
from monosemantic.errors import UserError


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prefetch"]


def _wait_until(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


class Source:
    """A generator-backed source that records how far it was read and whether it was closed."""

    def __init__(self, n: int, fail_at: int | None = None, error: BaseException | None = None):
        self.n, self.fail_at, self.error = n, fail_at, error
        self.made, self.closed, self.thread = 0, False, ""

    def __iter__(self) -> Iterator[torch.Tensor]:
        try:
            for i in range(self.n):
                self.thread = threading.current_thread().name
                if i == self.fail_at:
                    raise self.error or UserError("acts.npy: NaN or inf in rows 3..4")
                self.made += 1
                yield torch.full((2, 3), float(i))
        finally:
            self.closed = True


def test_store_batches_are_identical_with_and_without_prefetch(tmp_path) -> None:
    """Parity on the real data path: float16 shards, shuffle windows, a batch spanning two windows."""
    gen = np.random.default_rng(0)
    np.save(tmp_path / "acts.npy", gen.standard_normal((1000, 8)).astype(np.float16))
    src = open_activations(tmp_path / "acts.npy")
    plain = list(src.batches(64, seed=3, buffer_rows=200))
    fetched = list(prefetch(src.batches(64, seed=3, buffer_rows=200)))
    assert len(plain) == len(fetched) == 16
    assert all(a.dtype == b.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(plain, fetched, strict=True))
    assert _wait_until(lambda: not _prefetch_threads())


def test_items_are_handed_over_not_copied() -> None:
    items = [torch.randn(4, 2) for _ in range(5)]
    assert all(a is b for a, b in zip(prefetch(items), items, strict=True))


def test_runs_in_another_thread_and_stays_bounded() -> None:
    src = Source(100)
    it = prefetch(src, depth=2)
    first = next(it)
    assert torch.equal(first, torch.zeros(2, 3)) and src.thread == "prefetch"
    time.sleep(0.3)  # the thread runs ahead until the queue is full
    assert src.made <= 1 + 2 + 1  # handed over + queued + the one waiting to be put
    assert [int(x[0, 0]) for x in it] == list(range(1, 100))
    assert src.closed and _wait_until(lambda: not _prefetch_threads())


def test_an_error_in_the_thread_reaches_the_consumer_in_order() -> None:
    src = Source(10, fail_at=3)
    got = []
    with pytest.raises(UserError, match="NaN or inf"):
        for x in prefetch(src):
            got.append(int(x[0, 0]))
    assert got == [0, 1, 2]  # every item before the error, then the error
    assert src.closed and _wait_until(lambda: not _prefetch_threads())


def test_a_keyboard_interrupt_in_the_source_reaches_the_consumer() -> None:
    with pytest.raises(KeyboardInterrupt):
        list(prefetch(Source(10, fail_at=2, error=KeyboardInterrupt())))
    assert _wait_until(lambda: not _prefetch_threads())


@pytest.mark.parametrize("how", ["close", "interrupt"])
def test_early_exit_stops_the_thread_and_closes_the_source(how: str) -> None:
    src = Source(1000)
    it = prefetch(src, depth=2)
    assert int(next(it)[0, 0]) == 0
    assert _wait_until(lambda: src.made >= 3)  # the thread is blocked on a full queue
    if how == "close":
        it.close()  # what a `break` out of a for loop does once the generator is dropped
    else:
        with pytest.raises(KeyboardInterrupt):
            it.throw(KeyboardInterrupt())  # Ctrl-C arriving while the consumer waits in the generator
    assert src.closed  # closed in the thread, before close() returned
    assert not _prefetch_threads()
    assert src.made <= 4


def test_depth_zero_is_the_plain_iterator_and_bad_depth_fails_at_the_call() -> None:
    src = Source(3)
    assert [int(x[0, 0]) for x in prefetch(src, depth=0)] == [0, 1, 2]
    assert src.thread == threading.current_thread().name
    with pytest.raises(ValueError, match="depth"):
        prefetch([], depth=-1)


def test_sae_training_through_prefetch_is_bit_identical(tmp_path) -> None:
    """`train_saes` (the CLI's `sae train`) with the reader thread and without it: the same SAEs."""
    from monosemantic.pipeline import train_saes
    from monosemantic.sae.ladder import LadderConfig
    from monosemantic.sae.model import SparseAutoencoder
    from monosemantic.sae.train import SAETrainConfig

    acts = np.maximum(np.random.default_rng(0).normal(size=(1024, 16)), 0).astype(np.float16)
    np.save(tmp_path / "acts.npy", acts)
    train = SAETrainConfig(
        batch_size=64, lr=1e-3, b_dec_init_n_inputs=128, resample_n_batches=2, progress=False, fit_to_run=False
    )
    weights = []
    for depth in (0, 2):
        out = tmp_path / f"d{depth}"
        folders = train_saes(
            tmp_path / "acts.npy", out, LadderConfig(n_features=(32,)), train, "cpu", False, {}, None, depth
        )
        weights.append(SparseAutoencoder.load(folders["tm2023-32"]).state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert _wait_until(lambda: not _prefetch_threads())
