"""Small SVG charts drawn on the server for the dashboard: no JavaScript, no CDN.

Each chart is an ``<svg role="img">`` with an ``aria-label`` (its title), a ``<title>``
tooltip on every bar and point, and axes with labels; colors come from CSS classes
(``includes/dashboard_styles.html``), so the admin's dark mode applies. Every text is
escaped (``format_html``). The data also goes in a table under each chart, for screen
readers and for copying (the template's ``<details>``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 640
Formatter = Callable[[float], str]


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and a few round values (1, 2, 2.5 or 5 times a power of ten) up to ``top`` or
    just past it."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [step * n for n in range(math.ceil(top / step - 1e-9) + 1)]


def plain(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def duration(ms: float) -> str:
    """``850 ms``, ``1.2 s``, ``3.5 min``, ``2.0 h``, ``1.5 d``."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms / size:.1f} {unit}"
    return f"{ms:.0f} ms"


def _svg(title: str, height: int, body: SafeString, css: str) -> SafeString:
    return format_html(
        '<svg class="dwf-chart {}" role="img" aria-label="{}" viewBox="0 0 {} {}" '
        'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        "<title>{}</title>{}</svg>",
        css,
        title,
        WIDTH,
        height,
        title,
        body,
    )


@dataclass
class Series:
    label: str
    values: Sequence[float | None]  # None: no value that day (a gap)
    css: str  # the color's class: dwf-s-started, dwf-s-failed, ...


def line_chart(
    title: str, labels: Sequence[str], series: Sequence[Series], fmt: Formatter = plain
) -> SafeString:
    """Lines with a point per label (days), a y axis from 0 with round ticks, a legend."""
    left, right, top, bottom, height = 56, 28, 30, 34, 240
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    values = [v for s in series for v in s.values if v is not None]
    ticks = nice_ticks(max(values, default=0))
    scale = ticks[-1] or 1
    step = plot_w / max(len(labels) - 1, 1)

    def x(n: int) -> float:
        return left + (n * step if len(labels) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h - v / scale * plot_h

    parts = [_y_axis(ticks, left, WIDTH - right, y, fmt), _x_labels(labels, x, height - 14)]
    for s in series:
        points = [(n, v) for n, v in enumerate(s.values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in points)
            parts.append(format_html('<polyline class="dwf-line {}" points="{}"/>', s.css, path))
        parts.append(
            format_html_join(
                "",
                '<circle class="dwf-point {}" cx="{}" cy="{}" r="3"><title>{}</title></circle>',
                (
                    (s.css, f"{x(n):.1f}", f"{y(v):.1f}", f"{labels[n]}: {s.label} {fmt(v)}")
                    for n, v in points
                ),
            )
        )
    parts.append(_legend([(s.label, s.css) for s in series], left, 14))
    return _svg(title, height, mark_safe("".join(parts)), "dwf-line-chart")  # noqa: S308


def _y_axis(ticks: list[float], x0: float, x1: float, y: Callable, fmt: Formatter) -> SafeString:
    return format_html_join(
        "",
        '<line class="dwf-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
        '<text class="dwf-tick" x="{}" y="{}" text-anchor="end">{}</text>',
        ((x0, x1, f"{y(t):.1f}", f"{y(t):.1f}", x0 - 6, f"{y(t) + 4:.1f}", fmt(t)) for t in ticks),
    )


def _x_labels(labels: Sequence[str], x: Callable, baseline: float) -> SafeString:
    """At most about 10 labels under the axis, evenly spaced, the last one always."""
    every = max(1, math.ceil(len(labels) / 10))
    shown = [n for n in range(len(labels)) if n % every == 0]
    if labels and shown[-1] != len(labels) - 1:
        shown = [n for n in shown if len(labels) - 1 - n >= every] + [len(labels) - 1]
    return format_html_join(
        "",
        '<text class="dwf-tick" x="{}" y="{}" text-anchor="middle">{}</text>',
        ((f"{x(n):.1f}", baseline, labels[n]) for n in shown),
    )


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> SafeString:
    parts = []
    for label, css in items:
        parts.append(
            format_html(
                '<rect class="{}" x="{}" y="{}" width="10" height="10" rx="2"/>'
                '<text class="dwf-legend" x="{}" y="{}">{}</text>',
                css,
                x,
                y - 9,
                x + 14,
                y,
                label,
            )
        )
        x += 24 + 7 * len(label)
    return mark_safe("".join(parts))  # noqa: S308 - each part escaped


@dataclass
class Segment:
    value: float
    css: str
    tooltip: str


@dataclass
class Bar:
    """One row of a horizontal bar chart: segments stacked left to right (or, with
    ``overlay``, drawn over each other from the first), a note at its end (a link with
    ``href``)."""

    label: str
    segments: list[Segment]
    note: str = ""
    href: str = ""
    note_css: str = ""
    title: str = field(default="")  # the label's tooltip (the whole label)


def bar_chart(
    title: str,
    bars: Sequence[Bar],
    legend: Sequence[tuple[str, str]] = (),
    fmt: Formatter = plain,
    overlay: bool = False,
) -> SafeString:
    """Horizontal bars, one per row, labelled on the left, a value axis on top."""
    left, right, row, top = 220, 170, 26, 44 if legend else 26
    height = top + row * max(len(bars), 1) + 8
    plot_w = WIDTH - left - right
    totals = [
        max((s.value for s in b.segments), default=0)
        if overlay
        else sum(s.value for s in b.segments)
        for b in bars
    ]
    ticks = nice_ticks(max(totals, default=0), 3)
    scale = ticks[-1] or 1
    parts = [_legend(legend, left, 14)] if legend else []
    for t in ticks:
        x = left + t / scale * plot_w
        parts.append(
            format_html(
                '<line class="dwf-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="dwf-tick" x="{}" y="{}" text-anchor="middle">{}</text>',
                f"{x:.1f}",
                f"{x:.1f}",
                top - 4,
                height - 6,
                f"{x:.1f}",
                top - 8,
                fmt(t),
            )
        )
    for n, (bar, total) in enumerate(zip(bars, totals, strict=True)):
        y = top + n * row + 4
        label = bar.label if len(bar.label) <= 32 else bar.label[:31] + "…"
        parts.append(
            format_html(
                '<text class="dwf-label" x="{}" y="{}" text-anchor="end">{}'
                "<title>{}</title></text>",
                left - 8,
                y + 13,
                label,
                bar.title or bar.label,
            )
        )
        x = left
        for segment in bar.segments:
            w = segment.value / scale * plot_w
            parts.append(
                format_html(
                    '<rect class="dwf-bar {}" x="{}" y="{}" width="{}" height="18" rx="2">'
                    "<title>{}</title></rect>",
                    segment.css,
                    f"{x:.1f}",
                    y,
                    f"{max(w, 0):.1f}",
                    segment.tooltip,
                )
            )
            if not overlay:
                x += w
        end = left + total / scale * plot_w + 6
        if bar.note:
            note = format_html(
                '<text class="dwf-note {}" x="{}" y="{}">{}</text>',
                bar.note_css,
                f"{end:.1f}",
                y + 13,
                bar.note,
            )
            if bar.href:
                note = format_html('<a href="{}" class="dwf-note-link">{}</a>', bar.href, note)
            parts.append(note)
    if not bars:
        parts.append(
            format_html('<text class="dwf-tick" x="{}" y="{}">{}</text>', left, top + 16, "—")
        )
    return _svg(title, height, mark_safe("".join(parts)), "dwf-bar-chart")  # noqa: S308
