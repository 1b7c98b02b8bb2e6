# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small SVG chart of a canary analysis, written with the standard library only: two
panels (error rate, p95 latency), one line per track (canary, stable) over the analysis'
elapsed time, failed intervals marked. Pure: intervals in, SVG text out."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from xml.sax.saxutils import escape

PANELS = (("error_rate", "error rate (%)", 100.0), ("p95_latency", "p95 latency (ms)", 1000.0))
COLOURS = {"canary": "#d9480f", "stable": "#1971c2"}
OTHER_COLOUR = "#5f3dc4"
WIDTH, HEIGHT, PANEL_W, PANEL_H, LEFT, TOP = 760, 300, 330, 200, 50, 50


def _points(intervals, template, track, scale):
    points = []
    for entry in intervals:
        value = ((entry.get("series") or {}).get(template) or {}).get(track)
        if value is not None:
            points.append((entry["elapsed"], value * scale))
    return points


def _panel(out, x0, title, lines, failed_at, t_max):
    values = [point[1] for track_points in lines for point in track_points[1]]
    v_max = max(values + [0.0]) or 1.0
    v_max *= 1.1

    def px(t, v):
        return x0 + PANEL_W * (t / t_max), TOP + PANEL_H - PANEL_H * (v / v_max)
    out.append('<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>' % (x0, TOP - 10, escape(title)))
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#adb5bd"/>'
               % (x0, TOP, PANEL_W, PANEL_H))
    for t in failed_at:
        x = px(t, 0)[0]
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#fa5252" stroke-dasharray="3,3"/>'
                   % (x, TOP, x, TOP + PANEL_H))
    for frac in (0.0, 0.5, 1.0):
        v = v_max / 1.1 * frac
        y = px(0, v)[1]
        out.append('<text x="%d" y="%.1f" font-size="10" text-anchor="end">%.3g</text>' % (x0 - 4, y + 3, v))
    out.append('<text x="%d" y="%d" font-size="10">0 s</text>' % (x0, TOP + PANEL_H + 14))
    out.append('<text x="%d" y="%d" font-size="10" text-anchor="end">%.0f s</text>'
               % (x0 + PANEL_W, TOP + PANEL_H + 14, t_max))
    for track, pts in lines:
        colour = COLOURS.get(track, OTHER_COLOUR)
        coords = " ".join("%.1f,%.1f" % px(t, v) for t, v in pts)
        if len(pts) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (colour, coords))
        for t, v in pts:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (px(t, v) + (colour,)))


def render_svg(intervals, tracks=("canary", "stable"), title="canary analysis"):
    """The chart as SVG text (an empty analysis still gives a valid, labelled chart)."""
    t_max = max([e["elapsed"] for e in intervals] + [1.0])
    failed_at = [e["elapsed"] for e in intervals if e.get("verdict") == "fail"]
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif">' % (WIDTH, HEIGHT, WIDTH, HEIGHT),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>' % (LEFT, escape(title))]
    for n, (template, label, scale) in enumerate(PANELS):
        lines = [(track, _points(intervals, template, track, scale)) for track in tracks]
        _panel(out, LEFT + n * (PANEL_W + 50), label, lines, failed_at, t_max)
    legend_y = HEIGHT - 18
    x = LEFT
    for track in tracks:
        out.append('<rect x="%d" y="%d" width="12" height="4" fill="%s"/>'
                   % (x, legend_y - 4, COLOURS.get(track, OTHER_COLOUR)))
        out.append('<text x="%d" y="%d" font-size="11">%s</text>' % (x + 16, legend_y, escape(track)))
        x += 90
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#fa5252" stroke-dasharray="3,3"/>'
               % (x, legend_y - 2, x + 12, legend_y - 2))
    out.append('<text x="%d" y="%d" font-size="11">failed interval</text>' % (x + 16, legend_y))
    out.append("</svg>")
    return "\n".join(out) + "\n"
