"""The dashboard's charts as SVG geometry: calls per day, and the hours of the week
when calls are missed.

Plain numbers in, positions and sizes out; the template draws them as SVG, so the
page needs no chart library and no script.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from agent.reports.period import Period

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MIN_CELL_CALLS = 5  # fewer calls in an hour of the week say nothing about it

CHART_W, CHART_H, PAD_L, PAD_B, PAD_T = 720, 220, 40, 24, 10


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y_calls: float
    h_calls: float
    y_missed: float
    h_missed: float
    day: dt.date
    calls: int
    missed: int


@dataclass
class DailyChart:
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # x, date label
    y_max: int = 0
    width: int = CHART_W
    height: int = CHART_H
    left: int = PAD_L
    bottom: int = CHART_H - PAD_B
    top: int = PAD_T


def _nice_max(value: int) -> int:
    for step in (5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000):
        if value <= step:
            return step
    return ((value // 10000) + 1) * 10000


def daily_chart(per_day: dict[dt.date, list[int]], period: Period) -> DailyChart:
    days = [period.first + dt.timedelta(days=n) for n in range((period.last - period.first)
                                                                .days + 1)]
    chart = DailyChart()
    chart.y_max = _nice_max(max((per_day.get(day, [0, 0])[0] for day in days), default=0))
    plot_w = CHART_W - PAD_L - 8
    plot_h = chart.bottom - PAD_T
    slot = plot_w / len(days)
    width = max(slot * 0.75, 1.0)
    every = max(1, round(len(days) / 6))
    for n, day in enumerate(days):
        calls, missed = per_day.get(day, [0, 0])
        x = PAD_L + n * slot + (slot - width) / 2
        h_calls = plot_h * calls / chart.y_max
        h_missed = plot_h * missed / chart.y_max
        chart.bars.append(Bar(round(x, 1), round(width, 1), round(chart.bottom - h_calls, 1),
                              round(h_calls, 1), round(chart.bottom - h_missed, 1),
                              round(h_missed, 1), day, calls, missed))
        if n % every == 0:
            chart.ticks.append((round(x + width / 2, 1), f"{day:%b} {day.day}"))
    return chart


@dataclass(frozen=True)
class Cell:
    x: int
    y: int
    calls: int
    missed: int
    fill: str
    label: str


@dataclass
class HeatMap:
    cells: list[Cell] = field(default_factory=list)
    worst: str = ""  # "Tue 12:00–13:00: 8 of 20 calls missed (40%)"
    cell: int = 26
    left: int = 40
    top: int = 18

    @property
    def width(self) -> int:
        return self.left + 24 * self.cell + 2

    @property
    def height(self) -> int:
        return self.top + 7 * self.cell + 2


def _fill(missed: int, calls: int) -> str:
    """No calls: grey; else from pale to deep red by the share missed."""
    if calls == 0:
        return "#eef1f5"
    share = missed / calls
    low, high = (253, 236, 234), (180, 35, 24)
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heat_map(per_slot: dict[tuple[int, int], list[int]]) -> HeatMap:
    chart = HeatMap()
    worst: tuple[float, int, int, int, int] | None = None
    for weekday in range(7):
        for hour in range(24):
            calls, missed = per_slot.get((weekday, hour), [0, 0])
            span = f"{WEEKDAYS[weekday]} {hour:02d}:00–{(hour + 1) % 24:02d}:00"
            label = (f"{span}: {missed} of {calls} calls missed "
                     f"({round(100 * missed / calls)}%)" if calls else f"{span}: no calls")
            chart.cells.append(Cell(chart.left + hour * chart.cell,
                                    chart.top + weekday * chart.cell, calls, missed,
                                    _fill(missed, calls), label))
            if calls >= MIN_CELL_CALLS and missed and (
                    worst is None or (missed / calls, missed) > (worst[0], worst[1])):
                worst = (missed / calls, missed, calls, weekday, hour)
    if worst:
        share, missed, calls, weekday, hour = worst
        chart.worst = (f"{WEEKDAYS[weekday]} {hour:02d}:00–{(hour + 1) % 24:02d}:00: "
                       f"{missed} of {calls} calls missed ({round(100 * share)}%)")
    return chart

