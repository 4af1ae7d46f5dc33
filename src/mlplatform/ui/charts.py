"""Small charts drawn on the server as inline SVG (no script needed to read them)."""

from __future__ import annotations

from markupsafe import Markup, escape

from mlplatform.monitoring.schemas import ProfileHistogram


def _label(value: float) -> str:
    return f"{value:.4g}"


def histogram_cells(histogram: ProfileHistogram) -> list[str]:
    """A name for each count: a category, or the numeric interval the cell covers."""
    if histogram.labels is not None:
        return list(histogram.labels)
    edges = histogram.edges or []
    if not edges:
        return ["all"] * len(histogram.counts)
    cells = [f"≤ {_label(edges[0])}"]
    cells += [f"{_label(a)} – {_label(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    cells.append(f"> {_label(edges[-1])}")
    return cells[: len(histogram.counts)]


def histogram(histogram: ProfileHistogram, name: str, width: int = 220, height: int = 48) -> Markup:
    counts = histogram.counts
    if not counts:
        return Markup('<span class="muted">no values</span>')
    cells = histogram_cells(histogram)
    top = max(counts) or 1
    bar = width / len(counts)
    described = ", ".join(f"{cell}: {count}" for cell, count in zip(cells, counts, strict=False))
    parts = [
        f'<svg class="histogram" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>Histogram of {escape(name)}: {escape(described)}</title>'
    ]
    for i, count in enumerate(counts):
        h = 0 if count == 0 else max(1.0, (height - 2) * count / top)
        parts.append(
            f'<rect class="bar" x="{i * bar + 0.5:.1f}" y="{height - h:.1f}" '
            f'width="{max(bar - 1, 1):.1f}" height="{h:.1f}"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
