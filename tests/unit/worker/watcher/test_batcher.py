"""Ids become batches: full ones at once, a partial one after the wait, retries after outages."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from worker.watcher.batcher import Batcher


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Broker:
    """Records the batches it accepts; `down` refuses everything."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.down = False

    def send(self, ids: Sequence[int]) -> Sequence[int]:
        if self.down:
            return []
        self.batches.append(list(ids))
        return list(ids)


def test_a_burst_becomes_full_batches_and_the_rest_waits_for_the_deadline() -> None:
    clock, broker = Clock(), Broker()
    batcher = Batcher(broker.send, batch_size=4, wait_seconds=0.5, clock=clock)
    for scan_id in range(1, 11):
        batcher.add(scan_id)
        batcher.flush()
    assert broker.batches == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert batcher.next_due() == pytest.approx(50.5)
    clock.now += 0.49
    batcher.flush()
    assert len(broker.batches) == 2
    clock.now += 0.01
    batcher.flush()
    assert broker.batches[-1] == [9, 10]
    assert batcher.next_due() is None
    assert batcher.tasks_sent == 3


def test_a_lone_id_goes_out_after_the_wait_not_later() -> None:
    clock, broker = Clock(), Broker()
    batcher = Batcher(broker.send, batch_size=16, wait_seconds=0.2, clock=clock)
    batcher.add(7)
    assert batcher.next_due() == pytest.approx(50.2)
    clock.now = 50.2
    batcher.flush()
    assert broker.batches == [[7]]


def test_a_broker_outage_backs_off_and_sends_everything_once_it_is_back() -> None:
    clock, broker = Clock(), Broker()
    batcher = Batcher(broker.send, batch_size=2, wait_seconds=0.1, clock=clock)
    broker.down = True
    for scan_id in (1, 2, 3):
        batcher.add(scan_id)
    batcher.flush()
    assert batcher.next_due() == pytest.approx(51.0), "first retry after 1 s"
    clock.now += 1.0
    batcher.flush()
    assert batcher.next_due() == pytest.approx(53.0), "then after 2 s"
    broker.down = False
    clock.now += 2.0
    batcher.flush()
    assert broker.batches == [[1, 2], [3]]
    assert len(batcher) == 0


def test_the_final_flush_tries_once_and_the_backlog_is_capped() -> None:
    clock, broker = Clock(), Broker()
    batcher = Batcher(broker.send, batch_size=100, wait_seconds=10, clock=clock, max_backlog=3)
    for scan_id in range(1, 6):
        batcher.add(scan_id)
    assert len(batcher) == 3, "the oldest are left to the reconcile task"
    batcher.flush(final=True)
    assert broker.batches == [[3, 4, 5]]


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(Broker().send, batch_size=0, wait_seconds=1)
