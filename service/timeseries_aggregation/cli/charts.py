"""A query's totals as a horizontal bar chart."""

from collections.abc import Sequence

from timeseries_aggregation.cli.rendering import table_cell

# The narrowest bar area a chart keeps, however narrow the terminal.
MIN_BAR_COLUMNS = 10


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, columns: int) -> str:
    """One horizontal bar per value, its label on the left and its value on the right, within
    `columns` characters: every label stays readable however many there are. Negative values
    (export) grow left of a zero line, positive ones right of it."""
    texts = [table_cell(value) for value in values]
    label_width = max(map(len, labels))
    text_width = max(map(len, texts))
    area = max(columns - label_width - text_width - 2, MIN_BAR_COLUMNS)
    lowest, highest = min(0.0, *values), max(0.0, *values)
    # The zero line splits the area in proportion to the largest export and the largest import.
    negative_area = round(-lowest / ((highest - lowest) or 1.0) * area)
    positive_area = area - negative_area
    lines = [title]
    for label, value, text in zip(labels, values, texts, strict=True):
        left = "█" * round(value / lowest * negative_area) if value < 0 else ""
        right = "█" * round(value / highest * positive_area) if value > 0 else ""
        line = f"{label.ljust(label_width)} {left.rjust(negative_area)}{right.ljust(positive_area)}"
        lines.append(f"{line} {text.rjust(text_width)}")
    return "\n".join(lines)
