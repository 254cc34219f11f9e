"""Pictures of workflow graphs: a small layered layout, rendered server-side as inline SVG.

Pure Python, no JavaScript and nothing fetched from elsewhere. It reads the JSON snapshot
stored on ``DefinitionVersion.graph`` (``steps`` by name, ``edges`` with conditions) and,
for an instance, the state of each step; every text that comes from the graph is escaped.

The layout is the classic layered one (Sugiyama), kept small:

1. edges that close a loop are found by a depth-first search from the initial step (as
   the engine finds them) and left out of the layering;
2. each step goes on the layer of its longest path from the start;
3. an edge spanning several layers gets a bend point on each layer in between, so it
   goes around the steps instead of through them;
4. a few barycenter sweeps order each layer to reduce crossings;
5. layers are drawn top to bottom, centered; loop edges curve back on the right.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from ..definition import find_back_edges

#: How a step is drawn in each state of an instance: fill, stroke and a symbol.
STATE_STYLES: dict[str, dict[str, str]] = {
    "completed": {"fill": "#dcf3e0", "stroke": "#2e7d32", "symbol": "\u2713"},
    "current": {"fill": "#fff1c2", "stroke": "#b45f00", "symbol": "\u25b6"},
    "failed": {"fill": "#fcdcd9", "stroke": "#c62828", "symbol": "\u2715"},
    "canceled": {"fill": "#ececec", "stroke": "#6b6b6b", "symbol": "\u2013"},
    "pending": {"fill": "#ffffff", "stroke": "#8c8c8c", "symbol": ""},
}

#: Legend labels, in the order the legend shows them.
STATE_LABELS: dict[str, str] = {
    "completed": "Completed",
    "current": "Current",
    "failed": "Failed",
    "canceled": "Canceled",
    "pending": "Not reached",
}

_RUN_STATES = {
    "completed": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "queued": "current",
    "running": "current",
    "waiting": "current",
    "scheduled": "current",
}

# Geometry (pixels).
_NODE_H = 50
_DUMMY_W = 14
_MIN_NODE_W, _MAX_NODE_W = 130, 230
_MIN_GAP = 36
_LAYER_GAP = 66
_MARGIN = 20
_NAME_CHAR_W = 8.0  # 13px bold sans-serif, an estimate
_LABEL_CHAR_W = 6.7  # 11px monospace
_LABEL_MAX_CHARS = 32
_LOOP_STEP = 16
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
_MONO = "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace"

_CONTEXT_GET = re.compile(r"""context\.get\(\s*(['"])(\w+)\1\s*(?:,[^()]*)?\)""")


@dataclass
class _Node:
    key: str
    name: str = ""
    kind: str = "machine"  # machine, human, gateway, timer, signal (or the snapshot's)
    caption: str = ""
    dummy: bool = False
    layer: int = 0
    x: float = 0.0  # center
    y: float = 0.0  # center
    w: float = 0.0
    tooltip: str = ""


@dataclass
class _Edge:
    source: str
    target: str
    condition: str | None
    label: str
    back: bool = False
    path: list[str] = field(default_factory=list)  # node keys, bend points included
    on: str = ""  # "error" or "timeout" for a boundary edge


@dataclass
class Layout:
    """Positions of the steps and routes of the edges; ``width``/``height`` of the canvas."""

    nodes: dict[str, _Node]
    edges: list[_Edge]
    layers: list[list[str]]
    width: float
    height: float
    node_w: float

    def position(self, step: str) -> tuple[float, float]:
        node = self.nodes[step]
        return node.x, node.y


def condition_label(condition: Any) -> str:
    """A short text for an edge condition: ``context.get('x')`` shows as ``x``."""
    if condition is None or condition == "":
        return ""
    text = str(condition).strip()
    if text.startswith("<callable ") and text.endswith(">"):
        return f"\u0192 {text[len('<callable ') : -1]}"
    text = _CONTEXT_GET.sub(r"\2", text)
    text = re.sub(r"\s+", " ", text)
    if len(text) > _LABEL_MAX_CHARS:
        text = text[: _LABEL_MAX_CHARS - 1] + "\u2026"
    return text


#: How a boundary edge is drawn: color, dash pattern.
BOUNDARY_STYLES: dict[str, tuple[str, str]] = {
    "error": ("#c62828", "6 3"),
    "timeout": ("#b45f00", "2 3"),
}


def duration_label(seconds: Any) -> str:
    """A timeout edge's duration, short: ``3d``, ``1d 12h``, ``90m`` is ``1h 30m``."""
    try:
        left = int(float(seconds))
    except (TypeError, ValueError):
        return ""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size and len(parts) < 2:
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts) or "0s"


def boundary_label(raw: Mapping[str, Any]) -> str:
    """The label of a boundary edge: a warning sign for error, a clock and the duration
    for timeout."""
    if raw.get("on") == "error":
        return "\u26a0 error"
    return f"\u25f7 {duration_label(raw.get('after_seconds'))}"


def _caption(spec: Mapping[str, Any]) -> tuple[str, str]:
    kind = str(spec.get("type") or "machine")
    if kind == "gateway":
        return kind, "exclusive gateway" if "default" in spec else "parallel gateway"
    if kind == "signal":  # what it waits for
        return kind, f"signal: {spec.get('signal') or '?'}"
    if kind == "subworkflow":  # BPMN's call activity marker, and the child's name
        each = " (each)" if spec.get("for_each") else ""
        return kind, f"\u229e {spec.get('workflow') or 'sub-workflow'}{each}"
    return kind, {"machine": "machine step", "human": "human task", "timer": "timer"}.get(
        kind, kind
    )


def layout(graph: Mapping[str, Any]) -> Layout:
    """Lay out a stored graph snapshot (``DefinitionVersion.graph``)."""
    steps: Mapping[str, Any] = graph.get("steps") or {}
    names = [str(name) for name in steps]
    nodes: dict[str, _Node] = {}
    for name in names:
        spec = steps[name] if isinstance(steps[name], Mapping) else {}
        kind, caption = _caption(spec)
        tooltip = f"{name} ({caption})"
        if spec.get("description"):
            tooltip += f"\n{spec['description']}"
        nodes[name] = _Node(key=name, name=name, kind=kind, caption=caption, tooltip=tooltip)

    defaults = {
        name: steps[name].get("default")
        for name in names
        if isinstance(steps[name], Mapping) and steps[name].get("default")
    }
    edges: list[_Edge] = []
    for raw in graph.get("edges") or []:
        source, target = str(raw.get("source")), str(raw.get("target"))
        if source not in nodes or target not in nodes:
            continue
        condition = raw.get("condition")
        label = condition_label(condition)
        if not label and defaults.get(source) == target:
            label = "default"
        on = str(raw.get("on") or "")
        if on in BOUNDARY_STYLES:
            label = boundary_label(raw)
        edges.append(
            _Edge(source, target, condition, label, on=on if on in BOUNDARY_STYLES else "")
        )

    outgoing: dict[str, list[str]] = {name: [] for name in names}
    for edge in edges:
        outgoing[edge.source].append(edge.target)

    # 1. Loop edges, by depth-first search from the initial step (then from any step left).
    initial = graph.get("initial_step")
    roots = ([initial] if initial in nodes else []) + names
    back = find_back_edges(roots, outgoing)
    for edge in edges:
        edge.back = (edge.source, edge.target) in back or edge.source == edge.target

    # 2. Longest-path layering over the forward edges (Kahn's order).
    forward = [e for e in edges if not e.back]
    indegree = dict.fromkeys(names, 0)
    for edge in forward:
        indegree[edge.target] += 1
    queue = [name for name in roots if indegree[name] == 0]
    queue = list(dict.fromkeys(queue))
    seen_in_order: list[str] = []
    while queue:
        name = queue.pop(0)
        seen_in_order.append(name)
        for edge in forward:
            if edge.source == name:
                nodes[edge.target].layer = max(nodes[edge.target].layer, nodes[name].layer + 1)
                indegree[edge.target] -= 1
                if indegree[edge.target] == 0:
                    queue.append(edge.target)

    # 3. Bend points for edges that skip layers.
    for index, edge in enumerate(edges):
        edge.path = [edge.source]
        if not edge.back:
            for layer in range(nodes[edge.source].layer + 1, nodes[edge.target].layer):
                key = f"\0{index}:{layer}"
                nodes[key] = _Node(key=key, dummy=True, layer=layer, w=_DUMMY_W)
                edge.path.append(key)
        edge.path.append(edge.target)

    # 4. Order within layers: first by discovery from the start, then barycenter sweeps.
    discovery: list[str] = []
    pending = [n for n in roots if n in nodes]
    visited: set[str] = set()
    while pending:
        name = pending.pop(0)
        if name in visited:
            continue
        visited.add(name)
        discovery.append(name)
        pending.extend(outgoing[name])
    discovery += [k for k in nodes if k not in visited]
    depth = max((n.layer for n in nodes.values()), default=0)
    layers: list[list[str]] = [[] for _ in range(depth + 1)]
    for key in discovery:
        layers[nodes[key].layer].append(key)
    up: dict[str, list[str]] = {k: [] for k in nodes}
    down: dict[str, list[str]] = {k: [] for k in nodes}
    for edge in edges:
        if not edge.back:
            for a, b in pairwise(edge.path):
                down[a].append(b)
                up[b].append(a)

    def sweep(order: range, neighbours: dict[str, list[str]], ref: int) -> None:
        for i in order:
            position = {k: p for p, k in enumerate(layers[i + ref])}
            current = {k: p for p, k in enumerate(layers[i])}

            def barycenter(key: str, position=position, current=current) -> float:
                linked = [position[n] for n in neighbours[key] if n in position]
                return sum(linked) / len(linked) if linked else current[key]

            layers[i].sort(key=barycenter)

    for _ in range(4):
        sweep(range(1, len(layers)), up, -1)
        sweep(range(len(layers) - 2, -1, -1), down, 1)

    # 5. Coordinates.
    longest_name = max((len(n.name) for n in nodes.values() if not n.dummy), default=8)
    node_w = min(max(longest_name * _NAME_CHAR_W + 44, _MIN_NODE_W), _MAX_NODE_W)
    longest_label = max((len(e.label) for e in edges if not e.back), default=0)
    gap = max(_MIN_GAP, longest_label * _LABEL_CHAR_W + 18 - node_w)
    for node in nodes.values():
        if not node.dummy:
            node.w = node_w
    widths = [sum(nodes[k].w for k in layer) + gap * max(len(layer) - 1, 0) for layer in layers]
    inner = max(widths, default=node_w)
    for i, layer in enumerate(layers):
        x = _MARGIN + (inner - widths[i]) / 2
        for key in layer:
            node = nodes[key]
            node.x = x + node.w / 2
            node.y = _MARGIN + _NODE_H / 2 + i * (_NODE_H + _LAYER_GAP)
            x += node.w + gap
    width = inner + 2 * _MARGIN
    loops = [e for e in edges if e.back]
    if loops:
        widest_loop_label = max(len(e.label) for e in loops) * _LABEL_CHAR_W
        width += 18 + _LOOP_STEP * len(loops) + widest_loop_label / 2 + 8
    height = 2 * _MARGIN + len(layers) * _NODE_H + (len(layers) - 1) * _LAYER_GAP
    return Layout(nodes, edges, layers, width, height, node_w)


def step_states(
    runs: Iterable[tuple[str, str]],
    *,
    current_steps: Iterable[str] = (),
    failed_step: str = "",
) -> dict[str, str]:
    """The state of each step of an instance: its latest run's, or current / failed.

    ``runs`` are ``(step_name, status)`` of the instance's step runs in creation order.
    """
    states: dict[str, str] = {}
    for step_name, status in runs:
        states[step_name] = _RUN_STATES.get(status, "pending")
    for step_name in current_steps:
        states[step_name] = "current"
    if failed_step:
        states[failed_step] = "failed"
    return states


def taken_edges(
    runs: Iterable[tuple[int, str, str]], edges: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Edges a token went down: the target started after the source completed.

    ``runs`` are ``(id, step_name, status)`` of the instance's step runs; ids grow in time.
    """
    first_completed: dict[str, int] = {}
    last_started: dict[str, int] = {}
    for run_id, step_name, status in runs:
        if status == "completed" and step_name not in first_completed:
            first_completed[step_name] = run_id
        last_started[step_name] = max(run_id, last_started.get(step_name, run_id))
    return {
        (source, target)
        for source, target in edges
        if source in first_completed
        and target in last_started
        and first_completed[source] < last_started[target]
    }


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _shape(node: _Node, fill: str, stroke: str, stroke_width: float) -> str:
    x0, x1 = node.x - node.w / 2, node.x + node.w / 2
    y0, y1 = node.y - _NODE_H / 2, node.y + _NODE_H / 2
    paint = f'fill="{fill}" stroke="{stroke}" stroke-width="{_num(stroke_width)}"'
    if node.kind == "gateway":
        cut = 16
        points = [
            (x0, node.y),
            (x0 + cut, y0),
            (x1 - cut, y0),
            (x1, node.y),
            (x1 - cut, y1),
            (x0 + cut, y1),
        ]
        coords = " ".join(f"{_num(px)},{_num(py)}" for px, py in points)
        return f'<polygon points="{coords}" {paint}/>'
    radius = {"human": 16, "subworkflow": 2}.get(node.kind, 5)
    rect = (
        f'<rect x="{_num(x0)}" y="{_num(y0)}" width="{_num(node.w)}" height="{_NODE_H}" '
        f'rx="{_num(radius)}" {paint}/>'
    )
    if node.kind in ("timer", "subworkflow"):  # a double border (square: a sub-workflow)
        inner_rx = 3 if node.kind == "timer" else 0
        rect += (
            f'<rect x="{_num(x0 + 4)}" y="{_num(y0 + 4)}" width="{_num(node.w - 8)}" '
            f'height="{_NODE_H - 8}" rx="{inner_rx}" fill="none" stroke="{stroke}" '
            'stroke-width="1"/>'
        )
    if node.kind == "signal":  # an envelope at the top left: a message it waits for
        ex, ey = x0 + 7, y0 + 6
        rect += (
            f'<g class="dwf-signal-icon" fill="none" stroke="{stroke}" stroke-width="1.2">'
            f'<rect x="{_num(ex)}" y="{_num(ey)}" width="14" height="10" rx="1"/>'
            f'<polyline points="{_num(ex)},{_num(ey)} {_num(ex + 7)},{_num(ey + 6)} '
            f'{_num(ex + 14)},{_num(ey)}"/></g>'
        )
    return rect


def _fit(text: str, width: float, char_w: float) -> str:
    room = max(int(width / char_w), 4)
    return text if len(text) <= room else text[: room - 1] + "\u2026"


def _bezier(points: list[tuple[float, float]]) -> tuple[str, tuple[float, float]]:
    """A smooth vertical path through ``points``; returns it and a point near its end."""
    (x, y), rest = points[0], points[1:]
    parts = [f"M{_num(x)},{_num(y)}"]
    label_at = points[-1]
    for nx, ny in rest:
        mid = (y + ny) / 2
        parts.append(f"C{_num(x)},{_num(mid)} {_num(nx)},{_num(mid)} {_num(nx)},{_num(ny)}")
        # The label sits at t = 0.7 of the last segment: near the target, off the fan-out.
        t = 0.7
        bx = x + (nx - x) * (3 * t**2 - 2 * t**3)
        by = y + (ny - y) * t
        label_at = (bx, by)
        x, y = nx, ny
    return " ".join(parts), label_at


def _label(x: float, y: float, text: str, title: str, *, italic: bool = False) -> str:
    width = len(text) * _LABEL_CHAR_W + 8
    style = ' font-style="italic"' if italic else ""
    return (
        f'<g class="dwf-edge-label"><title>{escape(title)}</title>'
        f'<rect x="{_num(x - width / 2)}" y="{_num(y - 9)}" width="{_num(width)}" height="17" '
        f'rx="3" fill="#ffffff" fill-opacity="0.92" stroke="#d0d0d0" stroke-width="0.8"/>'
        f'<text x="{_num(x)}" y="{_num(y + 4)}" text-anchor="middle" font-family="{_MONO}" '
        f'font-size="11" fill="#333333"{style}>{escape(text)}</text></g>'
    )


def render_svg(
    graph: Mapping[str, Any],
    states: Mapping[str, str] | None = None,
    taken: Iterable[tuple[str, str]] = (),
    *,
    legend: bool | None = None,
    id_prefix: str = "dwf",
    title: str = "",
) -> SafeString:
    """Inline SVG of ``graph`` with each step colored by its state in ``states``.

    ``states`` maps step names to ``completed``, ``current``, ``failed``, ``canceled``
    (missing: not reached); ``taken`` lists ``(source, target)`` edges to draw as taken.
    The legend shows when states are given, unless ``legend`` says otherwise. Give each
    picture on a page its own ``id_prefix``.
    """
    plan = layout(graph)
    states = dict(states or {})
    taken = set(taken)
    show_legend = bool(states) if legend is None else legend
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", id_prefix) or "dwf"
    legend_h = 34 if show_legend else 0
    legend_w = sum(42 + len(label) * 7 for label in STATE_LABELS.values()) + 4
    width = max(plan.width, legend_w if show_legend else 0)
    height = plan.height + legend_h
    # Center the graph when the legend makes the canvas wider than the graph.
    shift = (width - plan.width) / 2
    caption = title or f"Workflow graph of {graph.get('name', '')} {graph.get('version', '')}"
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dwf-graph" role="img" '
        f'aria-labelledby="{prefix}-title" width="{_num(width)}" height="{_num(height)}" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="{_FONT}" '
        f'style="max-width:100%;height:auto">',
        f'<title id="{prefix}-title">{escape(caption.strip())}</title>',
        "<defs>",
    ]
    arrows = [("arrow", "#8c8c8c"), ("arrow-taken", "#2e7d32")]
    arrows += [(f"arrow-{on}", color) for on, (color, _) in BOUNDARY_STYLES.items()]
    for name, color in arrows:
        out.append(
            f'<marker id="{prefix}-{name}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" '
            f'orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
        )
    out.append("</defs>")
    out.append(f'<rect width="{_num(width)}" height="{_num(height)}" fill="#ffffff"/>')
    out.append(f'<g transform="translate({_num(shift)},0)">')

    # Edges first, so that steps and labels are drawn over them.
    labels: list[str] = []
    right = max((n.x + n.w / 2 for n in plan.nodes.values()), default=0)
    loop_index = 0
    for edge in plan.edges:
        is_taken = (edge.source, edge.target) in taken
        color, marker = ("#2e7d32", "arrow-taken") if is_taken else ("#8c8c8c", "arrow")
        if edge.on:  # a boundary edge: its own color, dashed, whether taken or not
            color, marker = BOUNDARY_STYLES[edge.on][0], f"arrow-{edge.on}"
        stroke = f'stroke="{color}" stroke-width="{2.2 if is_taken else 1.4}"'
        source, target = plan.nodes[edge.source], plan.nodes[edge.target]
        if edge.back:
            loop_index += 1
            sx, sy = source.x + source.w / 2, source.y
            tx, ty = target.x + target.w / 2, target.y
            bend = right + 18 + _LOOP_STEP * loop_index
            if edge.source == edge.target:
                sy, ty = source.y + 10, source.y - 10
            d = (
                f"M{_num(sx)},{_num(sy)} C{_num(bend)},{_num(sy)} "
                f"{_num(bend)},{_num(ty)} {_num(tx)},{_num(ty)}"
            )
            label_at = (0.25 * sx + 0.75 * bend, (sy + ty) / 2)
            dash = ' stroke-dasharray="5 3"'
        else:
            points = [(source.x, source.y + _NODE_H / 2)]
            points += [(plan.nodes[k].x, plan.nodes[k].y) for k in edge.path[1:-1]]
            points.append((target.x, target.y - _NODE_H / 2))
            d, label_at = _bezier(points)
            dash = ""
        if edge.on:
            dash = f' stroke-dasharray="{BOUNDARY_STYLES[edge.on][1]}"'
        kind = f' data-on="{edge.on}"' if edge.on else ""
        out.append(
            f'<path class="dwf-edge{" dwf-edge-" + edge.on if edge.on else ""}"{kind} '
            f'data-source="{escape(edge.source)}" '
            f'data-target="{escape(edge.target)}" data-taken="{str(is_taken).lower()}" '
            f'd="{d}" fill="none" {stroke}{dash} marker-end="url(#{prefix}-{marker})">'
            f"<title>{escape(edge.source)} \u2192 {escape(edge.target)}"
            f"{escape(': ' + str(edge.condition)) if edge.condition else ''}"
            f"{escape(' (on ' + edge.on + ': ' + edge.label + ')') if edge.on else ''}"
            "</title></path>"
        )
        if edge.label:
            full = str(edge.condition) if edge.condition else edge.label
            labels.append(_label(*label_at, edge.label, full, italic=edge.label == "default"))
    out.extend(labels)

    for node in plan.nodes.values():
        if node.dummy:
            continue
        state = states.get(node.name, "pending")
        style = STATE_STYLES.get(state, STATE_STYLES["pending"])
        emphasis = 3 if state in ("current", "failed") else 1.6
        out.append(
            f'<g class="dwf-step dwf-step-{escape(node.kind)} dwf-state-{escape(state)}" '
            f'data-step="{escape(node.name)}" data-state="{escape(state)}">'
            f"<title>{escape(node.tooltip)}: {escape(STATE_LABELS.get(state, state))}</title>"
        )
        out.append(_shape(node, style["fill"], style["stroke"], emphasis))
        room = node.w - (44 if node.kind == "gateway" else 28)
        out.append(
            f'<text x="{_num(node.x)}" y="{_num(node.y - 3)}" text-anchor="middle" '
            f'font-size="13" font-weight="600" fill="#1f1f1f">'
            f"{escape(_fit(node.name, room, _NAME_CHAR_W))}</text>"
            f'<text x="{_num(node.x)}" y="{_num(node.y + 14)}" text-anchor="middle" '
            f'font-size="11" fill="#555555">{escape(node.caption)}</text>'
        )
        if style["symbol"]:  # a badge on the top right corner, for who can't tell colors
            bx, by = node.x + node.w / 2 - 10, node.y - _NODE_H / 2
            out.append(
                f'<circle cx="{_num(bx)}" cy="{_num(by)}" r="8" fill="#ffffff" '
                f'stroke="{style["stroke"]}" stroke-width="1.4"/>'
                f'<text x="{_num(bx)}" y="{_num(by + 4)}" text-anchor="middle" font-size="11" '
                f'font-weight="700" fill="{style["stroke"]}">{style["symbol"]}</text>'
            )
        out.append("</g>")
    out.append("</g>")

    if show_legend:
        y = plan.height + 8
        x = 12.0
        out.append('<g class="dwf-legend" font-size="12" fill="#333333">')
        for state, label in STATE_LABELS.items():
            style = STATE_STYLES[state]
            out.append(
                f'<rect x="{_num(x)}" y="{_num(y)}" width="16" height="16" rx="3" '
                f'fill="{style["fill"]}" stroke="{style["stroke"]}" stroke-width="1.6"/>'
                f'<text x="{_num(x + 22)}" y="{_num(y + 12.5)}">{escape(label)}</text>'
            )
            x += 22 + len(label) * 7 + 20
        out.append("</g>")
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308  (every text above is escaped)
