"""A cohort's size and its adds/removes per run, drawn as SVG on the server.

Why here and not a chart library in the browser: two small charts do not earn 200 KB of
vendored JavaScript to audit and update; drawn in Python they are pure functions tested like
the planner, every label is escaped in one place, and each chart is also a plain image
(`curl .../size.svg`) for a wiki or an issue. The page fetches them at its own width, so text
keeps its size on a phone. Colours are presentation attributes (the page's CSS may override
them); no inline style, so the page's Content-Security-Policy can forbid inline styles.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape
from typing import Any

HEIGHT = 220  # px
MIN_WIDTH, MAX_WIDTH, DEFAULT_WIDTH = 280, 1600, 640  # px
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 16, 14, 30  # px around the plot
ADD, REMOVE, LINE, INK, GRID = "#1a7f37", "#cf222e", "#0969da", "#57606a", "#d0d7de"


def clamp_width(raw: str | None) -> int:
    """The ?width= of a chart request, kept within what a screen needs."""
    try:
        return min(max(int(float(raw or DEFAULT_WIDTH)), MIN_WIDTH), MAX_WIDTH)
    except ValueError:
        return DEFAULT_WIDTH


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round axis values (steps of 1, 2 or 5 times a power of ten) covering low..high."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0)  # members are whole numbers
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return ticks


def short_number(n: float) -> str:
    """1234 -> 1.2k, 3400000 -> 3.4M: axis labels stay narrow."""
    a = abs(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{n / div:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{n:g}"


def _when(ts: float, with_date: bool) -> str:
    fmt = "%m-%d %H:%M" if with_date else "%H:%M:%S"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime(fmt)


class _Frame:
    """The plot area of one chart: scales from run index and value to pixels."""

    def __init__(self, width: int, n: int, low: float, high: float) -> None:
        self.width, self.n = width, n
        self.ticks = nice_ticks(low, high)
        self.low, self.high = self.ticks[0], self.ticks[-1]
        self.plot_w = width - PAD_LEFT - PAD_RIGHT
        self.plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
        self.band = self.plot_w / max(n, 1)

    def x(self, i: int) -> float:
        return PAD_LEFT + self.band * (i + 0.5)

    def y(self, value: float) -> float:
        return PAD_TOP + self.plot_h * (1 - (value - self.low) / (self.high - self.low))

    def axes(self, points: Sequence[dict[str, Any]]) -> list[str]:
        out = []
        for t in self.ticks:
            y = self.y(t)
            out.append(f'<line class="grid" x1="{PAD_LEFT}" x2="{self.width - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="{GRID}" stroke-width="1"/>')
            out.append(f'<text class="tick" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{INK}" '
                       f'font-size="11">{short_number(t)}</text>')
        times = [p["at"] for p in points if p.get("at")]
        with_date = bool(times) and _when(min(times), True)[:5] != _when(max(times), True)[:5]
        for i in sorted({0, len(points) // 2, len(points) - 1}) if points else ():
            if points[i].get("at") and (i == 0 or self.x(i) - self.x(0) > 90):
                anchor = "start" if i == 0 and self.n > 1 else ("end" if i == self.n - 1 and self.n > 1 else "middle")
                out.append(f'<text class="tick" x="{self.x(i):.1f}" y="{HEIGHT - 10}" text-anchor="{anchor}" '
                           f'fill="{INK}" font-size="11">{_when(points[i]["at"], with_date)}</text>')
        out.append(f'<text class="tick" x="{self.width - PAD_RIGHT}" y="{PAD_TOP - 2}" text-anchor="end" '
                   f'fill="{INK}" font-size="10">UTC</text>' if times else "")
        return out


def _svg(kind: str, width: int, n: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}-chart" data-points="{n}" role="img" '
            f'width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="system-ui, sans-serif">'
            f'<title>{escape(title)}</title>{"".join(body)}</svg>')


def _empty(kind: str, width: int, title: str) -> str:
    return _svg(kind, width, 0, title, [
        f'<text class="empty" x="{width / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" fill="{INK}" '
        f'font-size="13">No runs yet: a run appears here once it sends something or fails.</text>'])


def _label(p: dict[str, Any]) -> str:
    when = dt.datetime.fromtimestamp(p["at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if p.get("at") else "?"
    return (f"{when} run {p['run_id']} ({p['status']}): size {p['size']:,}, "
            f"+{p['adds']:,} -{p['removes']:,}")


def size_chart(cohort_id: str, points: Sequence[dict[str, Any]], width: int = DEFAULT_WIDTH) -> str:
    """Members after each run: a line with one marker per run (series from overview.series)."""
    title = f"Members of {cohort_id} after each run"
    if not points:
        return _empty("size", width, title)
    sizes = [p["size"] for p in points]
    frame = _Frame(width, len(points), 0, max(max(sizes), 1))
    coords = [(frame.x(i), frame.y(s)) for i, s in enumerate(sizes)]
    body = frame.axes(points)
    body.append(f'<polyline class="line" fill="none" stroke="{LINE}" stroke-width="2" stroke-linejoin="round" '
                f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in coords)}"/>')
    radius = max(min(4.0, frame.band * 0.35), 1.5)  # hundreds of runs still show as separate points
    for (x, y), p in zip(coords, points):
        body.append(f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{LINE}" stroke="#fff" '
                    f'stroke-width="{min(1.5, radius / 2):.1f}">'
                    f'<title>{escape(_label(p))}</title></circle>')
    return _svg("size", width, len(points), title, body)


def changes_chart(cohort_id: str, points: Sequence[dict[str, Any]], width: int = DEFAULT_WIDTH) -> str:
    """Adds (up, green) and removes (down, red) sent by each run, on the same run axis as the size chart."""
    title = f"Members added and removed in each run of {cohort_id}"
    if not points:
        return _empty("changes", width, title)
    top = max(max(p["adds"] for p in points), 1)
    bottom = max(max(p["removes"] for p in points), 0)
    frame = _Frame(width, len(points), -bottom, top)
    bar = max(min(frame.band * 0.6, 28), 2)
    zero = frame.y(0)
    body = frame.axes(points)
    for i, p in enumerate(points):
        x = frame.x(i) - bar / 2
        tip = f"<title>{escape(_label(p))}</title>"
        if p["adds"]:
            y = frame.y(p["adds"])
            body.append(f'<rect class="bar bar-add" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{zero - y:.1f}" '
                        f'fill="{ADD}">{tip}</rect>')
        if p["removes"]:
            y = frame.y(-p["removes"])
            body.append(f'<rect class="bar bar-remove" x="{x:.1f}" y="{zero:.1f}" width="{bar:.1f}" '
                        f'height="{y - zero:.1f}" fill="{REMOVE}">{tip}</rect>')
        if not p["adds"] and not p["removes"]:
            body.append(f'<rect class="bar bar-none" x="{x:.1f}" y="{zero - 1:.1f}" width="{bar:.1f}" height="2" '
                        f'fill="{INK}">{tip}</rect>')
    body.append(f'<line class="zero" x1="{PAD_LEFT}" x2="{width - PAD_RIGHT}" y1="{zero:.1f}" y2="{zero:.1f}" '
                f'stroke="{INK}" stroke-width="1"/>')
    return _svg("changes", width, len(points), title, body)
