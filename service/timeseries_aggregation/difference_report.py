"""What the operator's check commands print: the first differences they find, then how many
there were, so a database with millions of damaged rows still gives a readable answer."""

from dataclasses import dataclass, field
from typing import TextIO

DEFAULT_SHOWN = 20


@dataclass(slots=True)
class DifferenceReport:
    """Prints the first `shown` differences as they are found and counts them all."""

    out: TextIO
    shown: int = DEFAULT_SHOWN
    found: int = 0
    series: set[str] = field(default_factory=set)

    def add(self, series_id: str, line: str) -> None:
        self.found += 1
        self.series.add(series_id)
        if self.found <= self.shown:
            print(line, file=self.out)

    def summary(self) -> None:
        """One closing line when anything differed: the count, and how many lines were left out."""
        if not self.found:
            return
        left_out = self.found - min(self.found, self.shown)
        tail = f" ({left_out:,} more not shown)" if left_out else ""
        differences = "difference" if self.found == 1 else "differences"
        print(f"{self.found:,} {differences} in {len(self.series):,} series{tail}", file=self.out)
