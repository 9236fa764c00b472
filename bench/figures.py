"""How the bench shows a figure: percentiles, durations, rates and whether a target is met."""

from __future__ import annotations

from collections.abc import Sequence


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} readings/s"
