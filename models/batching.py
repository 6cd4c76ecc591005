"""Token-budget dynamic batching shared by the encoder and the reranker.

Concurrent requests put their token sequences on one bounded queue; a single worker thread takes
everything waiting (at once: requests that arrive while a batch runs form the next one, so a lone
query never waits for company), sorts it by length (so a batch pads little), cuts it into batches whose cost stays
under `max_batch_tokens` (the padded size for a dense forward; the real tokens for an engine that packs
them, vLLM or the packed path), runs them on the device and resolves each sequence's future.
The bound counts every admitted token not yet finished, waiting or taken by the worker: a request
that does not fit is refused at once (`QueueFull`) instead of waiting, so an accepted request never
has more than `max_queue_tokens` of work ahead of it, however hard the server is overloaded. A sequence is admitted to the model only at the start of its own batch: one whose future
was cancelled meanwhile (the service cancels it when the client disconnects or the request's deadline
passes) is dropped there, so it costs no model time.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from models.errors import DeadlineTooShort, QueueFull

log = logging.getLogger(__name__)

# When the current request must be answered (time.monotonic()), set by the service per request: a
# request whose work cannot finish by then is refused at admission instead of timing out later.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("reprank_deadline", default=None)
MEASURED_ENOUGH = 4096  # tokens run before the measured pace is trusted for refusals (warm-up batches are tiny)


class Pace:
    """Seconds a batch takes, fitted online as fixed + per_token * tokens (exponentially weighted least
    squares over the batches run; real tokens, so padding is in the time). The fixed part matters on a
    CPU: a lone 26-token query pays ~6 ms of it, and a rate alone (tokens / seconds) measured on such
    batches would price a batch of sixteen queued queries at sixteen times one."""

    def __init__(self):
        self.batches = 0
        self._x = self._y = self._xx = self._xy = 0.0  # weighted means of tokens, seconds, tokens², tokens·seconds

    def add(self, tokens: int, seconds: float) -> None:
        self.batches += 1
        w = max(0.05, 1 / self.batches)  # the first batches weigh equally, then the last ~20 count most
        self._x += w * (tokens - self._x)
        self._y += w * (seconds - self._y)
        self._xx += w * (tokens * tokens - self._xx)
        self._xy += w * (tokens * seconds - self._xy)

    def fit(self) -> tuple[float, float]:
        """(fixed seconds per batch, seconds per token); proportional when the sizes barely varied."""
        var = self._xx - self._x * self._x
        if var > 0.01 * self._x * self._x:
            per = (self._xy - self._x * self._y) / var
            fixed = self._y - per * self._x
            if per > 0 and fixed >= 0:
                return fixed, per
        return 0.0, self._y / max(self._x, 1e-9)

    def seconds(self, tokens: int, batches: int = 1) -> float:
        """How long `tokens` take in `batches` batches; 0 for nothing."""
        if tokens <= 0:
            return 0.0
        fixed, per = self.fit()
        return batches * fixed + tokens * per


@dataclass
class BatchStats:
    size: int
    tokens: int  # real tokens
    padded_tokens: int  # size * longest, what the dense forward pays for
    seconds: float


@dataclass
class _Item:
    ids: list[int]
    future: Future


class TokenBatcher:
    def __init__(
        self,
        run: Callable[[list[list[int]]], Sequence[Any]],
        *,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
        max_queue_tokens: int = 1_000_000,
        deadline_admission: bool = True,
        wait_ms: float = 0.0,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "batcher",
        padded: bool = True,
        batch_overhead_tokens: int = 16,  # measured: ~6 ms = 7 tokens of a bf16 forward on 2 EPYC cores
    ):
        self._run = run
        self.padded = padded
        self.batch_overhead_tokens = batch_overhead_tokens
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queue_tokens = max_queue_tokens
        self.deadline_admission = deadline_admission
        self._wait = wait_ms / 1000
        self._on_batch = on_batch
        self._queue: list[_Item] = []
        self._queued_tokens = 0
        self._running_tokens = 0  # taken by the worker, not yet finished
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0  # sequences whose future was cancelled before their batch ran
        self.pace = Pace()  # the measured cost of a batch
        self._measured = 0  # real tokens behind it
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Sequences waiting (not yet taken by the worker)."""
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        """Tokens waiting (not yet taken by the worker)."""
        return self._queued_tokens

    @property
    def pending_tokens(self) -> int:
        """Tokens admitted and not finished: waiting or in the worker's hands. This is what is bounded."""
        return self._queued_tokens + self._running_tokens

    def submit(self, seqs: list[list[int]]) -> list[Future]:
        """Queue all of a request's sequences, or none of them (QueueFull)."""
        tokens = sum(len(s) for s in seqs)
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            pending = self.pending_tokens
            if pending and pending + tokens > self.max_queue_tokens:
                raise QueueFull(
                    f"queue full: {pending} tokens pending, limit {self.max_queue_tokens}",
                    retry_after=self._drain_seconds(),
                )
            self._check_deadline(seqs, tokens, pending)
            items = [_Item(s, Future()) for s in seqs]  # not copied: a reranker's carry their scored span
            self._queue.extend(items)
            self._queued_tokens += tokens
            self._cond.notify()
        return [it.future for it in items]

    def _check_deadline(self, seqs: list[list[int]], tokens: int, pending: int) -> None:
        """Refuse work that would finish after the request's deadline, at the measured pace: 413 when
        the request alone is too big for it (with how many of its items would fit), 429 when only the
        work queued ahead is in the way."""
        deadline = DEADLINE.get()
        if not self.deadline_admission or deadline is None or self._measured < MEASURED_ENOUGH:
            return
        left = deadline - time.monotonic()
        own, ahead = self.seconds_for(tokens), self.seconds_for(pending)
        if own > left:
            fits, spent = 0, 0
            while fits < len(seqs) and self.seconds_for(spent + len(seqs[fits])) <= left:
                spent += len(seqs[fits])
                fits += 1
            raise DeadlineTooShort(
                f"this request's {tokens} tokens take about {own:.1f} s at the measured pace, "
                f"more than the {max(left, 0):.1f} s left before its deadline: the first {fits} of its "
                f"{len(seqs)} items would fit; send fewer per request, or allow more time (X-Request-Timeout)",
                fits)
        if own + ahead > left:
            raise QueueFull(f"the {pending} tokens queued ahead would take this request past its deadline "
                            f"({own + ahead:.1f} s needed, {left:.1f} s left)", retry_after=ahead)

    def seconds_for(self, tokens: int) -> float:
        """How long `tokens` of work take at the measured pace, in batches of max_batch_tokens."""
        return self.pace.seconds(tokens, -(-tokens // self.max_batch_tokens))

    def _drain_seconds(self) -> float:
        """Retry-After for a refused request: how long the pending tokens take at the measured pace."""
        return max(1.0, self.seconds_for(self.pending_tokens)) if self.pace.batches else 1.0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[_Item]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed and not self._queue:
                return []
        if self._wait:  # optionally hold the first arrival so that others may join its batch
            time.sleep(self._wait)
        with self._cond:
            items, self._queue = self._queue, []
            self._running_tokens += self._queued_tokens
            self._queued_tokens = 0
        return items

    def _loop(self) -> None:
        while True:
            items = self._take()
            if not items:
                return
            items.sort(key=lambda it: len(it.ids))
            for batch in self._cut(items):
                admitted = [it for it in batch if self._admit(it)]
                if admitted:
                    self._run_batch(admitted)
                with self._cond:
                    self._running_tokens -= sum(len(it.ids) for it in batch)

    def _admit(self, it: _Item) -> bool:
        """Mark the sequence running, unless its future was cancelled meanwhile (then drop it)."""
        if it.future.set_running_or_notify_cancel():
            return True
        self.dropped += 1
        return False

    def _cut(self, items: list[_Item]) -> list[list[_Item]]:
        """Consecutive runs of the length-sorted items whose cost fits the budget. A padded forward takes
        the runs that pay least in padded tokens plus `batch_overhead_tokens` per batch (a batch's fixed
        cost: reading every weight once): one greedy cut of a rerank's mixed lengths padded its
        short passages up to its long ones. An engine that packs fills each batch greedily."""
        if self.padded:
            return self._cut_padded(items)
        batches: list[list[_Item]] = []
        cur: list[_Item] = []
        real = 0
        for it in items:
            n = max(len(it.ids), 1)
            if cur and (real + n > self.max_batch_tokens or len(cur) >= self.max_batch_size):
                batches.append(cur)
                cur, real = [], 0
            cur.append(it)
            real += n
        if cur:
            batches.append(cur)
        return batches

    def _cut_padded(self, items: list[_Item]) -> list[list[_Item]]:
        """The cheapest partition into runs (dynamic programming over the sorted lengths): cost[j] is the
        least cost of the first j items, their last run items[i:j] paying (j - i) * len(items[j-1])."""
        lengths = [max(len(it.ids), 1) for it in items]
        cost = [0.0] + [float("inf")] * len(items)
        start = [0] * (len(items) + 1)
        for j in range(1, len(items) + 1):
            longest = lengths[j - 1]
            for i in range(j - 1, max(j - self.max_batch_size, 0) - 1, -1):
                size = j - i
                if size > 1 and size * longest > self.max_batch_tokens:
                    break
                c = cost[i] + size * longest + self.batch_overhead_tokens
                if c < cost[j]:
                    cost[j], start[j] = c, i
        batches, j = [], len(items)
        while j:
            batches.append(items[start[j]:j])
            j = start[j]
        return batches[::-1]

    def _run_batch(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        try:
            outputs = self._run([it.ids for it in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"model returned {len(outputs)} outputs for {len(batch)} sequences")
        except BaseException as exc:  # the request fails, the worker lives on
            for it in batch:
                it.future.set_exception(exc)
            return
        for it, out in zip(batch, outputs, strict=True):
            it.future.set_result(out)
        lengths = [len(it.ids) for it in batch]
        stats = BatchStats(len(batch), sum(lengths), len(batch) * max(lengths), time.perf_counter() - start)
        self.pace.add(stats.tokens, stats.seconds)
        self._measured += stats.tokens
        if self._on_batch:
            try:
                self._on_batch(stats)
            except Exception:  # a metrics hook must never stop the worker
                log.exception("on_batch hook failed")


def gather(futures: list[Future], combine: Callable[[list[Any]], Any]) -> Future:
    """One future that resolves to combine(results) once every input future is done."""
    out: Future = Future()
    if not futures:
        out.set_result(combine([]))
        return out
    remaining = [len(futures)]
    lock = threading.Lock()

    def done(_f: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        if out.done():
            return
        errors = [f.exception() for f in futures if not f.cancelled() and f.exception()]
        if errors:
            out.set_exception(errors[0])
        elif any(f.cancelled() for f in futures):
            out.cancel()
        else:
            out.set_result(combine([f.result() for f in futures]))

    for f in futures:
        f.add_done_callback(done)
    out.add_done_callback(lambda o: o.cancelled() and [f.cancel() for f in futures])
    return out
