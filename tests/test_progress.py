"""Per-epoch progress lines: the epoch, its metrics, the time per epoch and the time left."""

from __future__ import annotations

from mammodp import progress


def test_line_has_the_epoch_time_and_time_left(monkeypatch):
    now = iter([100.0, 103.0, 104.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(now))
    clock = progress.EpochClock(first=11, last=300)  # resumed after epoch 10
    line = clock.line(11, {"val_auprc": 0.81234, "epsilon": 2.5, "skipped": None})
    assert line == "epoch 11/300: val_auprc 0.8123 epsilon 2.5 | 3.00 s/epoch, 14 min 27 s left"
    assert clock.line(12, {"loss": float("nan")}) == (
        "epoch 12/300: loss nan | 1.00 s/epoch, 9 min 36 s left"
    )


def test_durations():
    assert progress._duration(59.4) == "59 s"
    assert progress._duration(3599) == "59 min 59 s"
    assert progress._duration(7260) == "2 h 01 min"


def test_track_logs_throttled_lines_without_carriage_returns(monkeypatch, caplog):
    import logging

    clock = iter([0.0, 10.0, 40.0, 50.0, 80.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    log = logging.getLogger("test.track")
    with caplog.at_level("INFO", logger="test.track"):
        assert list(progress.track(range(4), 4, "batch 0", "series", log)) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    # after item 2 (40 s: 30 s since the start) and at the end; none after items 1 and 3
    assert lines == [
        "batch 0: 2/4 series (0.05 series/s, 40 s left)",
        "batch 0: 4/4 series (0.05 series/s, 0 s left)",
    ]
    assert not any("\r" in x for x in lines)
