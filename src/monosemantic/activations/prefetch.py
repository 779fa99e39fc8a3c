"""Read the next batches in a background thread while the current one trains.

    for x in prefetch(store.batches(4096, seed=0)):   # the same tensors, in the same order
        ...

Between two SAE steps the store reads rows from the memmap, converts float16 to float32 and
copies a batch out of its shuffle window (`store.py`), about 15 ms a batch on average on the 2-core
machine, most of it in one burst per 512 MB window (docs/benchmarks.md). `prefetch` runs the
iterator in a daemon thread and hands its items over through a bounded queue, so that work overlaps
the step (NumPy's reads, conversions and copies release the GIL, as do torch's kernels). The
tensors are the iterator's own, passed by reference: no copy is added. The trainer still sees a
plain iterator and knows nothing of the thread. On 2 cores the thread competes with the step's
own two threads: on the idle machine training was 2–17 % faster with it, under heavy load the
measurements went both ways (`sae train --prefetch N`, 0 turns it off; docs/decisions.md 2026-12-06).

- Order: one producer and a FIFO queue, so the items and their order are the iterator's.
- Memory: at most `depth` items wait in the queue, plus the one the thread is making.
- Errors: an exception raised by the iterator is re-raised in the consumer at the point where the
  item would have come (a `UserError` stays a `UserError`).
- Early exit: when the generator is closed (`close()`, or dropped after a `break`) or a
  KeyboardInterrupt arrives while the consumer waits in it, the thread stops, the source iterator
  is closed in that thread, and the consumer waits for both, so no read outlives the loop. A
  consumer interrupted elsewhere should close it (`train_ladder` closes its stream in `finally`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.1
"""How often a thread blocked on a full queue checks whether the consumer has gone."""


class _Raised:
    """An exception from the producer thread, carried through the queue."""

    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield `items` in order, produced up to `depth` ahead by a background thread (`depth` 0: no thread).

    The thread starts at the first `next()`.
    """
    if depth < 0:
        raise ValueError(f"prefetch depth must be ≥ 0, got {depth}")
    return iter(items) if depth == 0 else _prefetched(items, depth)


def _prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(iter(items), handoff, stop), name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # empty the queue so a waiting put returns, then wait for the thread
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=POLL_S)
        thread.join()


def _produce(source: Iterator[Any], handoff: queue.Queue[Any], stop: threading.Event) -> None:
    """The thread: put each item of `source` (then _END, or the exception) until `stop` is set."""

    def put(obj: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(obj, timeout=POLL_S)
                return True
            except queue.Full:
                pass
        return False

    try:
        for item in source:
            if not put(item) or stop.is_set():  # the consumer's exit may have emptied the queue: read no more
                return
        put(_END)
    except BaseException as e:  # handed to the consumer, which re-raises it
        put(_Raised(e))
    finally:
        close = getattr(source, "close", None)
        if close is not None:  # a generator's `finally` runs here, in the thread that ran it
            close()
