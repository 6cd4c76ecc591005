"""TokenBatcher and gather with a fake `run` function: the batcher is generic, no model needed."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import CancelledError, Future, wait

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.batching import DEADLINE, BatchStats, TokenBatcher, _Item, gather
from models.errors import DeadlineTooShort, QueueFull

BLOCK = -1  # a token that makes the fake run wait on a gate
POISON = -2  # a token that makes the fake run raise
TIMEOUT = 10


class FakeRun:
    """Records every batch it is given; returns each sequence as a tuple (so results name their input)."""

    def __init__(self):
        self.batches: list[list[list[int]]] = []
        self.entered = threading.Event()  # set when a BLOCK batch is running
        self.gate = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, seqs: list[list[int]]) -> list[tuple]:
        with self.lock:
            self.batches.append([list(s) for s in seqs])
        if any(BLOCK in s for s in seqs):
            self.entered.set()
            assert self.gate.wait(TIMEOUT), "gate never opened"
        if any(POISON in s for s in seqs):
            raise RuntimeError("poisoned batch")
        return [tuple(s) for s in seqs]

    def seen(self) -> list[list[int]]:
        with self.lock:
            return [s for b in self.batches for s in b]


@pytest.fixture
def fake():
    f = FakeRun()
    yield f
    f.gate.set()


def make(fake: FakeRun, **kw) -> TokenBatcher:
    kw.setdefault("wait_ms", 0)
    return TokenBatcher(fake, **kw)


def wait_for(condition, timeout: float = TIMEOUT) -> None:
    """The worker updates its counts just after resolving the futures: poll briefly for them."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


def block_worker(b: TokenBatcher, fake: FakeRun) -> Future:
    """Park the worker inside run() so what is submitted next waits in the queue, then is taken at once."""
    (blocker,) = b.submit([[BLOCK]])
    assert fake.entered.wait(TIMEOUT)
    assert b.depth == 0 and b.queued_tokens == 0
    return blocker


def seq(uid: int, length: int) -> list[int]:
    """A sequence of `length` tokens whose first token identifies it."""
    return [uid] + [7] * (length - 1)


@pytest.mark.parametrize("seed", range(4))
def test_each_request_gets_its_own_results(fake, seed):
    rng = random.Random(seed)
    b = make(fake, max_batch_tokens=rng.choice([16, 64, 256]), max_batch_size=rng.choice([1, 3, 8, 64]),
             wait_ms=rng.choice([0, 1, 2]))
    n_threads, per_thread = 8, 25
    results: dict[int, list[tuple[list[list[int]], list[Future]]]] = {}
    start = threading.Barrier(n_threads)

    def client(t: int) -> None:
        r = random.Random(seed * 100 + t)
        mine = []
        start.wait()
        for k in range(per_thread):
            base = (t * per_thread + k) * 1000
            seqs = [seq(base + j, r.randint(1, 40)) for j in range(r.randint(1, 6))]
            mine.append((seqs, b.submit(seqs)))
            if r.random() < 0.3:
                threading.Event().wait(r.random() / 1000)
        results[t] = mine

    threads = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    try:
        assert len(results) == n_threads
        n = 0
        for mine in results.values():
            for seqs, futures in mine:
                assert len(futures) == len(seqs)
                for s, f in zip(seqs, futures, strict=True):
                    assert f.result(TIMEOUT) == tuple(s)
                    n += 1
        assert sorted(map(tuple, fake.seen())) == sorted(
            tuple(s) for mine in results.values() for seqs, _ in mine for s in seqs)  # each ran exactly once
        assert n == len(fake.seen())
    finally:
        b.close()


@pytest.mark.parametrize("padded", [True, False])  # a dense forward pays the padded size; vLLM the real tokens
@pytest.mark.parametrize(("max_tokens", "max_size"), [(64, 100), (100, 4), (30, 1), (1000, 1000)])
def test_batches_respect_token_and_size_budgets(fake, max_tokens, max_size, padded):
    stats: list[BatchStats] = []
    b = make(fake, max_batch_tokens=max_tokens, max_batch_size=max_size, on_batch=stats.append, padded=padded)
    rng = random.Random(max_tokens)
    try:
        blocker = block_worker(b, fake)
        lengths = [rng.randint(1, 40) for _ in range(120)] + [max_tokens + 5, 2 * max_tokens]  # two over-long
        rng.shuffle(lengths)
        futures = b.submit([seq(i + 1000, n) for i, n in enumerate(lengths)])
        assert b.depth == len(lengths) and b.queued_tokens == sum(lengths)
        fake.gate.set()
        wait(futures, TIMEOUT)
        assert blocker.result(TIMEOUT) == (BLOCK,)
        batches = [[len(s) for s in batch] for batch in fake.batches[1:]]  # the blocker ran alone, first
        assert sorted(n for batch in batches for n in batch) == sorted(lengths)
        for batch in batches:
            assert batch == sorted(batch)  # length-sorted inside a batch
            assert len(batch) <= max_size
            cost = len(batch) * max(batch) if padded else sum(batch)
            assert cost <= max_tokens or len(batch) == 1  # the cost fits, or it runs alone
        if not padded and max_size == 100:  # the real-token budget fills batches the padded one would cut
            assert max(sum(batch) for batch in batches if len(batch) > 1) > max_tokens // 2
        for n in (max_tokens + 5, 2 * max_tokens):
            assert [n] in batches  # an over-long sequence runs, alone
        # taken in one go and sorted: batches follow each other in length order
        flat = [n for batch in batches for n in batch]
        assert flat == sorted(flat)
        # the stats match the batches
        assert [(s.size, s.tokens, s.padded_tokens) for s in stats[1:]] == [
            (len(batch), sum(batch), len(batch) * max(batch)) for batch in batches]
        assert all(s.seconds >= 0 for s in stats)
    finally:
        b.close()


def _cheapest(lengths: list[int], max_tokens: int, max_size: int, overhead: int) -> float:
    """Brute force: the least padded cost of any cut of the sorted lengths into runs that fit."""
    best = float("inf")
    for mask in range(1 << (len(lengths) - 1)):
        runs, cur = [], [lengths[0]]
        for k, n in enumerate(lengths[1:]):
            if mask >> k & 1:
                runs.append(cur)
                cur = []
            cur.append(n)
        runs.append(cur)
        if all(len(r) <= max_size and (len(r) == 1 or len(r) * r[-1] <= max_tokens) for r in runs):
            best = min(best, sum(len(r) * r[-1] + overhead for r in runs))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_padded_batches_are_the_cheapest_cut(fake, seed):
    """Mixed lengths (a rerank's passages) are cut where padding would cost more than another batch:
    the batches pay no more padded tokens plus per-batch overhead than the best cut a brute force finds."""
    rng = random.Random(seed)
    lengths = sorted(rng.choice([rng.randint(5, 20), rng.randint(60, 200)]) for _ in range(11))
    b = make(fake, max_batch_tokens=600, max_batch_size=6, batch_overhead_tokens=32)
    try:
        blocker = block_worker(b, fake)
        futures = b.submit([seq(i + 1000, n) for i, n in enumerate(lengths)])
        fake.gate.set()
        wait(futures, TIMEOUT)
        blocker.result(TIMEOUT)
        batches = [[len(s) for s in batch] for batch in fake.batches[1:]]
        paid = sum(len(batch) * max(batch) + 32 for batch in batches)
        assert paid == _cheapest(lengths, 600, 6, 32)
    finally:
        b.close()
    short_then_long = [10] * 8 + [200]  # one greedy batch would pad eight 10s to 200
    b = make(FakeRun(), max_batch_tokens=2048, batch_overhead_tokens=32)
    try:
        assert [[len(it.ids) for it in run] for run in b._cut_padded([_Item(seq(i, n), Future()) for i, n in
                                                                         enumerate(short_then_long)])] == [[10] * 8, [200]]
    finally:
        b.close()


def test_queue_full_is_atomic_and_the_queue_drains(fake):
    b = make(fake, max_queue_tokens=100)
    try:
        block_worker(b, fake)  # its one token is running: it counts against the bound until it finishes
        queued = b.submit([seq(1, 30), seq(2, 30)]) + b.submit([seq(3, 30)])
        assert (b.depth, b.queued_tokens, b.pending_tokens) == (3, 90, 91)
        with pytest.raises(QueueFull) as err:
            b.submit([seq(4, 5), seq(5, 6)])  # 91 + 11 > 100: none of it is queued
        assert err.value.retry_after > 0 and "100" in str(err.value)
        assert (b.depth, b.pending_tokens) == (3, 91)
        queued += b.submit([seq(6, 4), seq(7, 5)])  # exactly at the limit fits
        assert (b.depth, b.pending_tokens) == (5, 100)
        with pytest.raises(QueueFull):
            b.submit([seq(8, 1)])
        assert (b.depth, b.pending_tokens) == (5, 100)

        fake.gate.set()
        assert [f.result(TIMEOUT)[0] for f in queued] == [1, 2, 3, 6, 7]
        ran = {s[0] for s in fake.seen()}
        assert not ran & {4, 5, 8}  # refused sequences never run
        wait_for(lambda: b.pending_tokens == 0)
        assert b.depth == 0
        # an empty queue takes even a request over the limit (else it could never run)
        (big,) = b.submit([seq(9, 150)])
        assert big.result(TIMEOUT)[0] == 9
    finally:
        b.close()


def test_taken_work_counts_against_the_bound_until_it_finishes(fake):
    """Work the worker has taken but not finished still bounds admission: under overload an accepted
    request never has more than max_queue_tokens ahead of it (a waiting-only count lets the backlog
    grow to the limit twice over)."""
    b = make(fake, max_queue_tokens=100)
    try:
        (first,) = b.submit([[BLOCK] + [0] * 59])  # 60 tokens, taken at once and parked in run()
        assert fake.entered.wait(TIMEOUT)
        assert (b.queued_tokens, b.pending_tokens) == (0, 60)
        with pytest.raises(QueueFull):
            b.submit([seq(1, 50)])  # the queue is empty, but 60 + 50 > 100
        (second,) = b.submit([seq(2, 40)])
        assert b.pending_tokens == 100
        fake.gate.set()
        assert second.result(TIMEOUT)[0] == 2 and first.result(TIMEOUT)[0] == BLOCK
        wait_for(lambda: b.pending_tokens == 0)
    finally:
        b.close()


def test_run_exception_fails_only_its_batch(fake):
    b = make(fake, max_batch_size=2)
    try:
        block_worker(b, fake)
        # sorted by length: [a, poison] form the first batch, [c, d] the second
        a, poisoned, c, d = b.submit([seq(1, 1), [POISON, 7], seq(3, 3), seq(4, 3)])
        fake.gate.set()
        for f in (a, poisoned):
            with pytest.raises(RuntimeError, match="poisoned batch"):
                f.result(TIMEOUT)
        assert c.result(TIMEOUT) == tuple(seq(3, 3)) and d.result(TIMEOUT) == tuple(seq(4, 3))
        # and the worker keeps serving
        for i in range(3):
            assert [f.result(TIMEOUT) for f in b.submit([seq(10 + i, 2)])] == [tuple(seq(10 + i, 2))]
        with pytest.raises(RuntimeError):
            b.submit([[POISON]])[0].result(TIMEOUT)
        assert b.submit([seq(20, 5)])[0].result(TIMEOUT) == tuple(seq(20, 5))
    finally:
        b.close()


def test_cancelled_futures_never_run(fake):
    b = make(fake, max_batch_size=1)
    try:
        block_worker(b, fake)
        futures = b.submit([seq(i, 3) for i in range(1, 7)])
        assert all(futures[i].cancel() for i in (1, 3, 4))
        everything_cancelled = b.submit([seq(100, 2), seq(101, 2)])
        assert all(f.cancel() for f in everything_cancelled)
        fake.gate.set()
        assert [futures[i].result(TIMEOUT)[0] for i in (0, 2, 5)] == [1, 3, 6]
        assert all(futures[i].cancelled() for i in (1, 3, 4))
        assert b.submit([seq(200, 1)])[0].result(TIMEOUT)[0] == 200
        ran = [s[0] for s in fake.seen()]
        assert sorted(ran) == [BLOCK, 1, 3, 6, 200]  # no cancelled sequence, and no empty batch
        assert all(batch for batch in fake.batches)
    finally:
        b.close()


def test_closed_batcher_refuses_submissions(fake):
    b = make(fake)
    f = b.submit([seq(1, 2)])[0]
    assert f.result(TIMEOUT) == tuple(seq(1, 2))
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit([seq(2, 2)])


def test_wrong_output_count_fails_the_batch_not_the_worker():
    calls = []

    def run(seqs):
        calls.append(len(seqs))
        return [len(s) for s in seqs][: 1 if len(calls) == 1 else None]

    b = TokenBatcher(run, wait_ms=0)
    try:
        futures = b.submit([[1], [2, 2]])
        wait(futures, 0.5)
        assert all(f.done() for f in futures)
        assert b.submit([[3, 3, 3]])[0].result(2) == 3  # the worker still serves
    finally:
        b.close()


# ---------------------------------------------------------------------------------------------------------
# gather


def test_gather_combines_in_order():
    futures = [Future() for _ in range(4)]
    out = gather(futures, lambda results: results)
    for i in (2, 0, 3):
        futures[i].set_result(i * 10)
        assert not out.done()
    futures[1].set_result(10)
    assert out.result(0) == [0, 10, 20, 30]
    assert gather([], lambda results: ("empty", results)).result(0) == ("empty", [])
    assert gather([futures[0]], sum).result(0) == 0  # inputs already done


def test_gather_propagates_the_first_exception():
    futures = [Future() for _ in range(3)]
    out = gather(futures, lambda results: pytest.fail("combine must not run"))
    second, third = ValueError("second"), KeyError("third")
    futures[2].set_exception(third)
    futures[1].set_exception(second)
    assert not out.done()  # it waits for every input
    futures[0].set_result(0)
    assert out.exception(0) is second  # the first in input order


def test_gather_exception_wins_over_cancelled_input():
    futures = [Future() for _ in range(3)]
    out = gather(futures, list)
    futures[0].cancel()
    futures[1].set_exception(ValueError("boom"))
    futures[2].set_result(2)
    assert isinstance(out.exception(0), ValueError)

    futures = [Future() for _ in range(2)]
    out = gather(futures, list)
    futures[0].cancel()
    futures[1].set_result(1)
    assert out.cancelled()
    with pytest.raises(CancelledError):
        out.result(0)


def test_cancelling_gather_cancels_pending_inputs():
    futures = [Future() for _ in range(4)]
    futures[0].set_result(0)
    assert futures[1].set_running_or_notify_cancel()  # already running: cannot be cancelled
    out = gather(futures, list)
    assert out.cancel()
    assert out.cancelled()
    assert futures[0].result(0) == 0 and not futures[1].cancelled()
    assert futures[2].cancelled() and futures[3].cancelled()
    futures[1].set_result(1)  # finishing later does not touch the cancelled output
    assert out.cancelled()


def test_gather_over_batcher_cancel_skips_model_time(fake):
    b = make(fake)
    try:
        block_worker(b, fake)
        kept = gather(b.submit([seq(1, 2), seq(2, 3)]), lambda rs: [r[0] for r in rs])
        dropped = gather(b.submit([seq(3, 2), seq(4, 4)]), lambda rs: pytest.fail("cancelled"))
        assert dropped.cancel()  # the client went away before the worker took its sequences
        fake.gate.set()
        assert kept.result(TIMEOUT) == [1, 2]
        assert b.submit([seq(5, 1)])[0].result(TIMEOUT)[0] == 5
        assert not {3, 4} & {s[0] for s in fake.seen()}
    finally:
        b.close()


def test_a_cancel_after_the_take_still_drops_the_sequence(fake):
    """Admission is per batch: a sequence cancelled while earlier batches of its take run never runs."""
    b = make(fake, max_batch_size=1)
    try:
        futures = b.submit([[BLOCK], seq(2, 2), seq(3, 3), seq(4, 4)])  # one take, four batches
        assert fake.entered.wait(TIMEOUT)
        assert futures[2].cancel()
        fake.gate.set()
        assert [futures[i].result(TIMEOUT)[0] for i in (1, 3)] == [2, 4]
        assert [s[0] for s in fake.seen()] == [BLOCK, 2, 4] and b.dropped == 1
    finally:
        b.close()


requests_st = st.lists(
    st.tuples(st.lists(st.integers(1, 48), min_size=1, max_size=6),  # lengths of one request's sequences
              st.booleans(),  # cancelled by its client
              st.booleans()),  # arrives while the worker is busy (joins the next take) or when it is idle
    min_size=1, max_size=25)


@given(requests=requests_st, max_tokens=st.sampled_from([8, 48, 100, 4096]), max_size=st.integers(1, 9))
@settings(max_examples=100, deadline=None)
def test_property_every_request_gets_exactly_its_own_results(requests, max_tokens, max_size):
    """Whatever the lengths, arrival order and cancellations: each live sequence gets its own result,
    exactly once; cancelled ones never run; batches keep their budgets."""
    fake = FakeRun()
    b = TokenBatcher(fake, max_batch_tokens=max_tokens, max_batch_size=max_size, wait_ms=0)
    try:
        blocker = None
        submitted = []
        for uid, (lengths, cancel, while_busy) in enumerate(requests):
            if while_busy and blocker is None:
                fake.entered.clear()
                fake.gate.clear()
                blocker = b.submit([[BLOCK]])[0]
                assert fake.entered.wait(TIMEOUT)
            seqs = [seq(uid * 10 + j + 1, n) for j, n in enumerate(lengths)]
            futures = b.submit(seqs)
            if cancel and blocker is not None:  # queued behind the busy worker: cancellable for sure
                assert all(f.cancel() for f in futures)
            submitted.append((seqs, futures, cancel and blocker is not None))
            if not while_busy and blocker is not None:
                fake.gate.set()
                blocker.result(TIMEOUT)
                blocker = None
        fake.gate.set()
        last = seq(9, 49)  # the longest: the last of its take, so every earlier sequence was settled
        assert b.submit([last])[0].result(TIMEOUT) == tuple(last)
        for seqs, futures, cancelled in submitted:
            for s, f in zip(seqs, futures, strict=True):
                assert f.cancelled() if cancelled else f.result(TIMEOUT) == tuple(s)
        live = sorted(tuple(s) for seqs, _, c in submitted if not c for s in seqs)
        ran = sorted(tuple(s) for s in fake.seen() if s not in ([BLOCK], last))
        assert ran == live
        assert b.dropped == sum(len(seqs) for seqs, _, c in submitted if c)
        for batch in fake.batches:
            assert len(batch) <= max_size
            assert len(batch) == 1 or len(batch) * max(map(len, batch)) <= max_tokens
    finally:
        fake.gate.set()
        b.close()


def test_retry_after_is_the_measured_drain_time():
    """A refused request is told to come back when the queue will have drained, at the measured rate."""
    gate, entered = threading.Event(), threading.Event()

    def run(seqs):  # 100 padded tokens take 50 ms: 2,000 tokens/s
        if seqs[0][0] == BLOCK:
            entered.set()
            assert gate.wait(TIMEOUT)
        elif not gate.is_set():  # once the test is over the queue drains at once
            threading.Event().wait(0.05)
        return [0] * len(seqs)

    b = TokenBatcher(run, max_batch_tokens=100, max_batch_size=100, max_queue_tokens=10_000, wait_ms=0)
    try:
        for i in range(2, 8):  # one batch each: the rate is measured from these
            b.submit([seq(i, 100)])[0].result(TIMEOUT)
        b.submit([[BLOCK]])
        assert entered.wait(TIMEOUT)
        b.submit([seq(9, 100)] * 99)  # 9,900 tokens waiting: about 5 s at 2,000 tokens/s
        with pytest.raises(QueueFull) as refused:
            b.submit([seq(10, 200)])
        assert 2 < refused.value.retry_after < 30  # slower on a loaded machine, never the default 1 s
    finally:
        gate.set()
        b.close()


def test_work_that_cannot_meet_its_deadline_is_refused_at_admission():
    """At the measured rate (2,000 tokens/s here), a request too big for its deadline is 413-shaped
    (DeadlineTooShort, with how many items fit) and one blocked only by the work ahead is QueueFull."""
    gate, entered = threading.Event(), threading.Event()

    def run(seqs):  # 100 padded tokens take 50 ms
        if seqs[0][0] == BLOCK:
            entered.set()
            assert gate.wait(TIMEOUT)
        elif not gate.is_set():
            threading.Event().wait(0.05 * len(seqs) * max(map(len, seqs)) / 100)
        return [0] * len(seqs)

    b = TokenBatcher(run, max_batch_tokens=500, max_batch_size=100, max_queue_tokens=100_000, wait_ms=0)
    try:
        b.submit([seq(1, 100)] * 50)[0].result(TIMEOUT)  # 5,000 tokens measured
        for f in b.submit([seq(1, 100)] * 50):
            f.result(TIMEOUT)
        token = DEADLINE.set(time.monotonic() + 1.0)  # about 2,000 tokens fit in a second
        try:
            with pytest.raises(DeadlineTooShort) as too_big:
                b.submit([seq(2, 100)] * 60)  # 6,000 tokens: about 3 s
            assert 5 <= too_big.value.fits <= 20 and "would fit" in str(too_big.value)
            assert len(b.submit([seq(3, 100)] * 3)) == 3  # 0.15 s: admitted
            b.submit([[BLOCK]])
            assert entered.wait(TIMEOUT)
            b.submit([seq(4, 100)] * 16)  # 1,600 tokens queued ahead: 0.8 s
            with pytest.raises(QueueFull, match="past its deadline"):
                b.submit([seq(5, 100)] * 5)  # fits alone, not behind them
        finally:
            DEADLINE.reset(token)
        assert len(b.submit([seq(6, 100)] * 60)) == 60  # no deadline: no estimate
    finally:
        gate.set()
        b.close()
