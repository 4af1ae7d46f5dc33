"""Small charts drawn on the server as inline SVG (no script needed to read them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

from mlplatform.monitoring.schemas import HistogramRead, ProfileHistogram


def _label(value: float) -> str:
    return f"{value:.4g}"


DISPLAY_BINS = 24


def display_bins(histogram: ProfileHistogram, bins: int = DISPLAY_BINS) -> tuple[list[float], list[str]]:
    """What to draw: categories as they are; numeric cells re-binned into `bins` equal-width bins over the
    edges' range, each cell's count spread evenly over the part of it a bin covers (the profile's cells are
    quantiles, of very unequal widths, so drawn as they are every feature would look flat)."""
    if histogram.labels is not None:
        return [float(c) for c in histogram.counts], list(histogram.labels)
    edges = histogram.edges or []
    counts = histogram.counts
    if len(edges) < 2 or edges[-1] <= edges[0]:
        return [float(sum(counts))], ["all"]
    low, high = edges[0], edges[-1]
    step = (high - low) / bins
    shown = [0.0] * bins
    shown[0] += counts[0]  # (-inf, e0]
    shown[-1] += counts[-1] if len(counts) == len(edges) + 1 else 0  # (e_last, inf)
    for i, count in enumerate(counts[1 : len(edges)], start=1):
        a, b = edges[i - 1], edges[i]
        if count == 0:
            continue
        if b <= a:
            shown[min(int((a - low) / step), bins - 1)] += count
            continue
        first, last = int((a - low) / step), min(int((b - low) / step), bins - 1)
        for k in range(first, last + 1):
            overlap = min(b, low + (k + 1) * step) - max(a, low + k * step)
            shown[k] += count * max(overlap, 0.0) / (b - a)
    labels = [f"{_label(low + k * step)} – {_label(low + (k + 1) * step)}" for k in range(bins)]
    return shown, labels


def histogram(histogram: ProfileHistogram, name: str, width: int = 220, height: int = 48) -> Markup:
    if not histogram.counts or not sum(histogram.counts):
        return Markup('<span class="muted">no values</span>')
    counts, cells = display_bins(histogram)
    top = max(counts) or 1.0
    bar = width / len(counts)
    described = ", ".join(f"{cell}: {count:.0f}" for cell, count in zip(cells, counts, strict=True))
    parts = [
        f'<svg class="histogram" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>Histogram of {escape(name)}: {escape(described)}</title>'
    ]
    for i, count in enumerate(counts):
        h = 0.0 if count <= 0 else max(1.0, (height - 2) * count / top)
        parts.append(
            f'<rect class="bar" x="{i * bar + 0.5:.1f}" y="{height - h:.1f}" '
            f'width="{max(bar - 1, 1):.1f}" height="{h:.1f}"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


# --- experiments and training jobs (forest plots of intervals; trial values by trial number) ----------------

Interval = tuple[str, float | None, float | None, float | None]  # label, value, low, high


def _line(kind: str, x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line class="{kind}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"/>'


def _domain(values: list[float], include_zero: bool) -> tuple[float, float]:
    """The values' range (with 0 when asked); a single value gets a range around it."""
    low, high = min(values), max(values)
    if include_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if high <= low:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


INSET = 8  # pixels between a plot's edge and its outermost point, so a dot on the edge shows whole


def _described(rows: list[Interval]) -> str:
    parts = []
    for label, value, low, high in rows:
        if value is None:
            parts.append(f"{label}: no data")
        elif low is None or high is None:
            parts.append(f"{label}: {_label(value)}")
        else:
            parts.append(f"{label}: {_label(value)} ({_label(low)} to {_label(high)})")
    return "; ".join(parts)


def forest(title: str, rows: list[Interval], *, zero: bool = False, width: int = 480) -> Markup:
    """A forest plot: one row per label, its estimate as a dot on its interval's line. `zero` draws the
    line of no difference (for differences between variants)."""
    drawn = [r for r in rows if r[1] is not None]
    if not drawn:
        return Markup('<span class="muted">no data yet</span>')
    points = [v for r in drawn for v in r[1:] if v is not None]
    low, high = _domain(points, zero)
    left, right, row_height, top = 150, 14, 24, 6
    height = top + row_height * len(rows) + 26
    span = width - left - right - 2 * INSET

    def x(value: float) -> float:
        return left + INSET + span * (value - low) / (high - low)

    parts = [
        f'<svg class="forest" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}: {escape(_described(rows))}</title>',
        _line("axis", left, height - 22, width - right, height - 22),
    ]
    if zero and low <= 0 <= high:
        parts.append(_line("zero", x(0), top, x(0), height - 22))
    for tick in (low, (low + high) / 2, high):
        anchor = "start" if tick == low else "end" if tick == high else "middle"
        parts.append(
            f'<text class="tick" x="{x(tick):.1f}" y="{height - 6}" text-anchor="{anchor}">'
            f"{escape(_label(tick))}</text>"
        )
    for i, (label, value, lo, hi) in enumerate(rows):
        y = top + row_height * i + row_height / 2
        parts.append(
            f'<text class="row-label" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(label[:22])}</text>"
        )
        if value is None:
            parts.append(f'<text class="tick" x="{left + 4}" y="{y + 4:.1f}">no data</text>')
            continue
        if lo is not None and hi is not None:
            parts.append(_line("interval", x(lo), y, x(hi), y))
            parts.append(_line("interval", x(lo), y - 5, x(lo), y + 5))
            parts.append(_line("interval", x(hi), y - 5, x(hi), y + 5))
        parts.append(f'<circle class="estimate" cx="{x(value):.1f}" cy="{y:.1f}" r="4.5"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def trial_values(
    points: list[tuple[int, float]], best: int | None, metric: str, width: int = 560, height: int = 220
) -> Markup:
    """Each trial's search metric by trial number; the best trial drawn larger, in its own colour."""
    if not points:
        return Markup('<span class="muted">no trial has a value yet</span>')
    left, right, top, bottom = 56, 14, 10, 34
    last = max(n for n, _ in points)
    low, high = _domain([v for _, v in points], False)
    span_x, span_y = width - left - right - 2 * INSET, height - top - bottom - 2 * INSET

    def x(number: float) -> float:
        return left + INSET + span_x * (number / last if last else 0.5)

    def y(value: float) -> float:
        return top + INSET + span_y * (1 - (value - low) / (high - low))

    described = ", ".join(f"trial {n}: {_label(v)}{' (best)' if n == best else ''}" for n, v in points)
    parts = [
        f'<svg class="trials-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(metric)} by trial number: {escape(described)}</title>",
        _line("axis", left, height - bottom, width - right, height - bottom),
        _line("axis", left, top, left, height - bottom),
    ]
    for value in (low, (low + high) / 2, high):
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
            f"{escape(_label(value))}</text>"
        )
    for number in range(last + 1) if last <= 12 else sorted({0, last // 2, last}):
        parts.append(
            f'<text class="tick" x="{x(number):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"{number}</text>"
        )
    parts.append(
        f'<text class="tick" x="{left + span_x / 2:.1f}" y="{height - 4}" text-anchor="middle">trial</text>'
    )
    for number, value in points:
        if number != best:
            parts.append(f'<circle class="trial" cx="{x(number):.1f}" cy="{y(value):.1f}" r="4"/>')
    for number, value in points:
        if number == best:
            parts.append(f'<circle class="trial-best" cx="{x(number):.1f}" cy="{y(value):.1f}" r="7"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


# --- monitoring: performance over time and drift histograms ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a time chart: a value per bucket (None: no data, a gap in the line)."""

    name: str
    values: list[float | None]


_TICK_STEPS = [timedelta(hours=h) for h in (1, 2, 3, 6, 12, 24, 48)] + [timedelta(days=d) for d in (7, 14)]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time_ticks(start: datetime, end: datetime, most: int = 7) -> list[datetime]:
    span = end - start
    step = next((s for s in _TICK_STEPS if span / s <= most), _TICK_STEPS[-1])
    tick = _EPOCH + -((_EPOCH - start) // step) * step  # the first whole multiple of step at or after start
    found = []
    while tick <= end:
        found.append(tick)
        tick += step
    return found


def _value_text(value: float, percent: bool) -> str:
    return f"{value * 100:.0f} %" if percent else f"{value:.3g}"


def time_chart(
    *,
    title: str,
    buckets: list[tuple[datetime, datetime]],
    series: list[Series],
    percent: bool = False,
    top: float | None = None,
    notes: list[str] | None = None,
    width: int = 900,
    height: int = 250,
) -> Markup:
    """Lines over time, one point per bucket at its middle, with axes, a legend and each point's value as
    its tooltip (and as a label while a line has at most 12 points). `top`: the y axis's end (default: the
    largest value, rounded up); it starts at 0. `notes`: a text per bucket added to its points' tooltips."""
    if not buckets:
        return Markup('<p class="empty">No time in the window.</p>')
    left, right, upper, lower = 56, 16, 30, 34
    plot_w, plot_h = width - left - right, height - upper - lower
    start, end = buckets[0][0], buckets[-1][1]
    span = (end - start).total_seconds() or 1.0
    present = [v for s in series for v in s.values if v is not None]
    if top is None:
        largest = max(present, default=0.0) or 1.0
        magnitude = 10 ** math.floor(math.log10(largest))
        top = math.ceil(largest / magnitude * 2) / 2 * magnitude

    def x_of(at: datetime) -> float:
        return left + plot_w * (at - start).total_seconds() / span

    def y_of(value: float) -> float:
        return upper + plot_h * (1 - min(max(value / top, 0.0), 1.0)) if top else upper + plot_h

    names = ", ".join(s.name for s in series)
    shown = sum(1 for s in series for v in s.values if v is not None)
    parts = [
        f'<svg class="time-chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}: {escape(names)}, '
        f"{shown} point{'s' if shown != 1 else ''} (the table below lists every value)</title>"
    ]
    for i in range(5):
        value = top * i / 4
        y = y_of(value)
        parts.append(f'<line class="grid-line" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_value_text(value, percent))}</text>"
        )
    fmt = "%b %d %H:%M" if end - start <= timedelta(days=2) else "%b %d"
    for tick in _time_ticks(start, end):
        x = x_of(tick)
        parts.append(
            f'<line class="axis" x1="{x:.1f}" y1="{upper + plot_h}" x2="{x:.1f}" y2="{upper + plot_h + 5}"/>'
        )
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{upper + plot_h + 18}" text-anchor="middle">'
            f"{tick.strftime(fmt)}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{left}" y1="{upper + plot_h}" x2="{width - right}" y2="{upper + plot_h}"/>'
        f'<line class="axis" x1="{left}" y1="{upper}" x2="{left}" y2="{upper + plot_h}"/>'
        f'<text class="tick" x="{width - right}" y="{height - 2}" text-anchor="end">time (UTC)</text>'
    )
    middles = [a + (b - a) / 2 for a, b in buckets]
    for k, line in enumerate(series):
        lx = left + k * 170
        parts.append(
            f'<line class="series series-{k}" x1="{lx}" y1="12" x2="{lx + 22}" y2="12"/>'
            f'<text class="legend" x="{lx + 28}" y="16">{escape(line.name)}</text>'
        )
        path, pen_down = [], False
        for at, value in zip(middles, line.values, strict=True):
            if value is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{x_of(at):.1f},{y_of(value):.1f}")
            pen_down = True
        if path:
            parts.append(f'<path class="series series-{k}" d="{" ".join(path)}"/>')
        filled = sum(1 for v in line.values if v is not None)
        for index, (bucket, at, value) in enumerate(zip(buckets, middles, line.values, strict=True)):
            if value is None:
                continue
            label = (
                f"{bucket[0]:%Y-%m-%d %H:%M}–{bucket[1]:%H:%M} UTC: {line.name} {_value_text(value, percent)}"
            )
            if notes and notes[index]:
                label += f" ({notes[index]})"
            x, y = x_of(at), y_of(value)
            parts.append(
                f'<circle class="point series-{k}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
                f"<title>{escape(label)}</title></circle>"
            )
            if filled <= 12:
                dy = -8 if k % 2 == 0 else 16
                parts.append(
                    f'<text class="point-label" x="{x:.1f}" y="{y + dy:.1f}" text-anchor="middle">'
                    f"{escape(_value_text(value, percent))}</text>"
                )
    parts.append("</svg>")
    return Markup("".join(parts))


def drift_histogram(histogram: HistogramRead, name: str, width: int = 240, height: int = 64) -> Markup:
    """Reference and current shares side by side in the same cells (re-binned as `display_bins` does), as
    shares of each side's rows, since the two samples differ in size."""
    reference, cells = display_bins(
        ProfileHistogram(counts=histogram.reference, edges=histogram.edges, labels=histogram.labels)
    )
    current, _ = display_bins(
        ProfileHistogram(counts=histogram.current, edges=histogram.edges, labels=histogram.labels)
    )
    ref_total, cur_total = sum(reference), sum(current)
    if not ref_total and not cur_total:
        return Markup('<span class="muted">no values</span>')
    ref_share = [c / ref_total if ref_total else 0.0 for c in reference]
    cur_share = [c / cur_total if cur_total else 0.0 for c in current]
    top = max(ref_share + cur_share) or 1.0
    slot = width / len(cells)
    bar = max(slot / 2 - 0.5, 0.5)
    described = "; ".join(
        f"{cell}: reference {r * 100:.1f} %, current {c * 100:.1f} %"
        for cell, r, c in zip(cells, ref_share, cur_share, strict=True)
    )
    parts = [
        f'<svg class="drift-histogram" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(name)}, share of rows per cell: {escape(described)}</title>"
        f'<line class="axis" x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>'
    ]
    for i, (r, c) in enumerate(zip(ref_share, cur_share, strict=True)):
        for offset, share, kind in ((0.0, r, "reference"), (bar, c, "current")):
            h = 0.0 if share <= 0 else max(1.0, (height - 2) * share / top)
            parts.append(
                f'<rect class="bar-{kind}" x="{i * slot + offset + 0.25:.1f}" y="{height - 1 - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}"/>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
