"""Per-epoch progress lines for long jobs: the epoch, its metrics, the time per epoch and the time
left, so that a job's log shows how far it is while it runs."""

from __future__ import annotations

import math
import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _value(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


class Every:
    """True at most once every ``seconds`` (from ``start``; by default the first call is)."""

    def __init__(self, seconds: float, start: float = -math.inf):
        self.seconds, self.last = seconds, start

    def __call__(self, now: float) -> bool:
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


class EpochClock:
    """Times epochs ``first``..``last`` (a resumed job starts after its saved epoch); the time
    left is the mean epoch time so far times the epochs still to run."""

    def __init__(self, first: int, last: int):
        self.first, self.last = first, last
        self.started = time.perf_counter()
        self.tick = self.started

    def line(self, epoch: int, metrics: dict) -> str:
        now = time.perf_counter()
        this, self.tick = now - self.tick, now
        done = epoch - self.first + 1
        left = (now - self.started) / done * (self.last - epoch)
        shown = " ".join(f"{k} {_value(v)}" for k, v in metrics.items() if v is not None)
        return f"epoch {epoch}/{self.last}: {shown} | {this:.2f} s/epoch, {_duration(left)} left"


def track(items, total: int, what: str, unit: str, logger, every: float = 30.0):
    """Yield ``items`` and log '<what>: i/total <unit> (rate, time left)' at most every
    ``every`` seconds and at the end: readable progress in a job's log file, where a progress
    bar's carriage returns would pile up."""
    start = time.perf_counter()
    due = Every(every, start)
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if due(now) or done == total:
            rate = done / max(now - start, 1e-9)
            left = (total - done) / rate if rate > 0 else math.inf
            logger.info(
                "%s: %d/%d %s (%.3g %s/s, %s left)",
                what,
                done,
                total,
                unit,
                rate,
                unit,
                _duration(left) if left < math.inf else "?",
            )
