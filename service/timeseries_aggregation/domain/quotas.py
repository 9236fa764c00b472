"""Fair shares per API key: a key's limits, the token bucket that paces its calls, and counts
of what each key holds (streams, write connections).

Plain data and arithmetic on a clock the caller passes in, so it is tested without a server.
"""

from collections import Counter
from dataclasses import dataclass, fields, replace

# The options a key-file line may carry after its digest, by name.
STREAMS = "streams"
WRITES = "writes"
RATE = "rate"
BURST = "burst"


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What one key may hold and how fast it may call; None: the server's default.

    streams: ingest streams open at once. writes: ingest streams holding a write connection at
    once. rate: calls per second (0: no limit). burst: calls at once beyond the rate.
    """

    streams: int | None = None
    writes: int | None = None
    rate: float | None = None
    burst: int | None = None

    def or_defaults(self, defaults: "KeyLimits") -> "KeyLimits":
        """These limits, with the defaults' where this has none."""
        return replace(
            self,
            **{
                item.name: getattr(defaults, item.name)
                for item in fields(self)
                if getattr(self, item.name) is None
            },
        )


def parse_key_options(options: list[str]) -> KeyLimits:
    """`streams=4 writes=2 rate=50 burst=100` (any of them, any order) to KeyLimits; raises
    ValueError naming the option at fault.

    An unknown field is named by its position, not quoted: it may be a key pasted by mistake.
    """
    values: dict[str, int | float] = {}
    for position, option in enumerate(options, start=4):
        name, separator, text = option.partition("=")
        if not separator or name not in (STREAMS, WRITES, RATE, BURST):
            raise ValueError(
                f"field {position} is not an option; "
                f"options are {STREAMS}=N, {WRITES}=N, {RATE}=N and {BURST}=N"
            )
        if name in values:
            raise ValueError(f"field {position}: the option {name!r} is given twice")
        values[name] = _option_value(name, text, position)
    return KeyLimits(**values)  # type: ignore[arg-type]


def _option_value(name: str, text: str, position: int) -> int | float:
    if name == RATE:
        try:
            rate = float(text)
        except ValueError:
            rate = -1.0
        # nan and inf fail the comparison or the bound.
        if not 0 <= rate <= 1_000_000:
            raise ValueError(
                f"field {position}: {RATE} must be calls per second from 0 (no limit) to 1000000"
            )
        return rate
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise ValueError(f"field {position}: {name} must be a whole number from 1 to 1000000")
    return int(text)


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; a call takes one."""

    rate: float
    burst: int
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: int, now: float) -> "TokenBucket":
        return cls(rate, burst, float(burst), now)

    def take(self, now: float) -> float:
        """Take a token: 0.0 when there was one, otherwise the seconds until there will be."""
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Holdings:
    """How many of one thing (streams, connections) each key holds."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()

    def try_take(self, name: str, limit: int) -> bool:
        """Take one for `name` unless it already holds `limit`."""
        if self._held[name] >= limit:
            return False
        self._held[name] += 1
        return True

    def give_back(self, name: str) -> None:
        self._held[name] -= 1
        if self._held[name] <= 0:
            del self._held[name]

    def held(self, name: str) -> int:
        return self._held[name]
