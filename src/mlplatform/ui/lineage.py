"""A version's lineage as an inline SVG drawn on the server: dataset → training job → version, the parent
chain it was derived from, and the versions derived from it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from markupsafe import Markup, escape

from mlplatform.registry.schemas import Lineage, VersionBrief

WIDTH, HEIGHT = 168, 46  # a node
GAP_X, GAP_Y = 56, 26
PAD = 12


@dataclass(frozen=True, slots=True)
class Node:
    column: int
    row: int
    kind: str  # dataset, job, version, current
    title: str
    note: str
    href: str | None = None

    @property
    def x(self) -> int:
        return PAD + self.column * (WIDTH + GAP_X)

    @property
    def y(self) -> int:
        return PAD + self.row * (HEIGHT + GAP_Y)


VERSION_ID = re.compile(r"(?P<name>.+)-v(?P<version>\d+)-\d{14}")


def _version_node(brief: VersionBrief, column: int, row: int, note: str) -> Node:
    """A version of any model: a parent may belong to another one, so its name comes from its id."""
    match = VERSION_ID.fullmatch(brief.id)
    name = match["name"] if match else brief.id
    return Node(
        column,
        row,
        "version",
        f"{name} v{brief.version}",
        f"{note} · {brief.status}",
        f"/ui/models/{quote(name)}/versions/{brief.version}",
    )


def layout(model: str, version: int, lineage: Lineage) -> tuple[list[Node], list[tuple[Node, Node, str]]]:
    """Nodes on a grid and the edges between them. Row 0: dataset → training job → this version → the
    versions derived from it (stacked). Row 1: the parent chain, oldest on the left."""
    sources = [
        (kind, title, ident)
        for kind, title, ident in (
            ("dataset", "dataset", lineage.training_dataset_id),
            ("job", "training job", lineage.training_job_id),
        )
        if ident
    ]
    column = max(len(sources), len(lineage.parents))
    current = Node(column, 0, "current", f"{model} v{version}", "this version")
    nodes = [current]
    edges: list[tuple[Node, Node, str]] = []
    previous: Node | None = None
    for i, (kind, title, ident) in enumerate(sources):
        placed = Node(column - len(sources) + i, 0, kind, title, ident or "")
        nodes.append(placed)
        if previous is not None:
            edges.append((previous, placed, "feeds"))
        previous = placed
    if previous is not None:
        edges.append((previous, current, "produced"))
    target = current
    for depth, parent in enumerate(lineage.parents, start=1):
        placed = _version_node(parent, column - depth, 1, "parent" if depth == 1 else "ancestor")
        nodes.append(placed)
        edges.append((placed, target, "is the parent of"))
        target = placed
    for row, child in enumerate(lineage.children):
        placed = _version_node(child, column + 1, row, "derived from this")
        nodes.append(placed)
        edges.append((current, placed, "is the parent of"))
    return nodes, edges


def render(model: str, version: int, lineage: Lineage) -> Markup:
    nodes, edges = layout(model, version, lineage)
    width = PAD * 2 + (max(n.column for n in nodes) + 1) * (WIDTH + GAP_X) - GAP_X
    height = PAD * 2 + (max(n.row for n in nodes) + 1) * (HEIGHT + GAP_Y) - GAP_Y
    summary = "; ".join(f"{a.title} {label} {b.title}" for a, b, label in edges) or "no recorded lineage"
    parts = [
        f'<svg class="lineage" role="group" aria-labelledby="lineage-title" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="lineage-title">Lineage of {escape(model)} v{version}: {escape(summary)}</title>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>',
    ]
    for a, b, _ in edges:
        x1, y1 = a.x + WIDTH, a.y + HEIGHT // 2
        x2, y2 = b.x, b.y + HEIGHT // 2
        if a.column == b.column:  # not drawn by `layout`, kept safe
            continue
        parts.append(f'<line class="edge" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" marker-end="url(#arrow)"/>')
    for node in nodes:
        box = (
            f'<rect class="node node-{node.kind}" x="{node.x}" y="{node.y}" '
            f'width="{WIDTH}" height="{HEIGHT}" rx="6"/>'
            f'<text class="node-title" x="{node.x + 10}" y="{node.y + 19}">{escape(node.title)}</text>'
            f'<text class="node-note" x="{node.x + 10}" y="{node.y + 36}">{escape(_clip(node.note))}</text>'
        )
        if node.href:
            box = f'<a href="{escape(node.href)}">{box}</a>'
        parts.append(box)
    parts.append("</svg>")
    return Markup("".join(parts))


def _clip(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
