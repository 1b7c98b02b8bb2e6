# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The capacity report as one self-contained HTML page: inline SVG charts first (usage against the
warning level and the action point; each workload's use of its requests), then the capacity table,
recommendations, cost notes, node outlook and the daily figures. No script, stylesheet, font or
image is loaded from anywhere: the page opens the same from a file, a mail or an AWX artifact.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from html import escape

# bar colours by status (also what the browser test looks for in the screenshot)
COLOURS = dict(ok="#2e7d32", warning="#f9a825", action="#c62828", unknown="#9e9e9e", workload="#1565c0",
               threshold="#263238", grid="#cfd8dc")
ROW_HEIGHT = 30
LABEL_WIDTH = 170
BAR_WIDTH = 520


def _e(value):
    return escape("" if value is None else str(value), quote=True)


def _bar_chart(title, bars, chart_id):
    """``bars``: (label, percent or None, colour, markers [(percent, dashed, title)], caption)."""
    height = ROW_HEIGHT * len(bars) + 40
    width = LABEL_WIDTH + BAR_WIDTH + 90
    out = ['<svg id="%s" role="img" aria-label="%s" width="%d" height="%d" viewBox="0 0 %d %d" '
           'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">'
           % (_e(chart_id), _e(title), width, height, width, height)]
    for tick in (0, 25, 50, 75, 100):
        x = LABEL_WIDTH + BAR_WIDTH * tick / 100.0
        out.append('<line x1="%.1f" y1="10" x2="%.1f" y2="%d" stroke="%s" stroke-width="1"/>'
                   % (x, x, height - 20, COLOURS["grid"]))
        out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#546e7a">%d%%</text>' % (x, height - 5, tick))
    for index, (label, value, colour, markers, caption) in enumerate(bars):
        y = 14 + index * ROW_HEIGHT
        out.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (LABEL_WIDTH - 8, y + 14, _e(label)))
        if value is None:
            out.append('<rect x="%d" y="%d" width="%d" height="18" fill="none" stroke="%s" stroke-dasharray="4 3"/>'
                       % (LABEL_WIDTH, y, BAR_WIDTH, COLOURS["unknown"]))
            out.append('<text x="%d" y="%d" fill="#546e7a">not measured</text>' % (LABEL_WIDTH + 8, y + 14))
            continue
        shown = max(min(float(value), 100.0), 0.0)
        out.append('<rect class="bar" x="%d" y="%d" width="%.1f" height="18" fill="%s"><title>%s</title></rect>'
                   % (LABEL_WIDTH, y, max(BAR_WIDTH * shown / 100.0, 2.0), colour, _e(caption)))
        for position, dashed, marker_title in markers:
            if position is None:
                continue
            x = LABEL_WIDTH + BAR_WIDTH * min(float(position), 100.0) / 100.0
            out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"%s><title>%s</title></line>'
                       % (x, y - 3, x, y + 21, COLOURS["threshold"], ' stroke-dasharray="3 2"' if dashed else "",
                          _e(marker_title)))
        out.append('<text x="%d" y="%d">%s%%</text>' % (LABEL_WIDTH + BAR_WIDTH + 8, y + 14, _e(value)))
    out.append("</svg>")
    return "\n".join(out)


def usage_chart(table):
    bars = [(row["resource"], row["percent"], COLOURS[row["status"]],
             [(row["warning_percent"], True, "warning %s%%" % row["warning_percent"]),
              (row["threshold_percent"], False, "action point %s: %s" % (row["threshold"], row["action_point"]))],
             "%s: %s (%s)" % (row["resource"], row["current"], row["status"])) for row in table]
    return _bar_chart("Usage against thresholds", bars, "usage-chart")


def workload_chart(workloads, limits):
    bars = []
    for name, usage in sorted(workloads.items()):
        for resource, key, cost in (("CPU", "cpu_percent_of_request", limits["cost_cpu_percent"]),
                                    ("memory", "memory_percent_of_request", limits["cost_memory_percent"])):
            if usage.get(key) is None:
                continue
            bars.append(("%s %s" % (name, resource), usage[key], COLOURS["workload"],
                         [(cost, True, "cost note below %s%% of the request" % cost)],
                         "%s uses %s%% of its %s request" % (name, usage[key], resource)))
    return _bar_chart("Use as percent of the requests", bars, "workload-chart") if bars else "<p>No pod metrics.</p>"


def _table(headers, rows):
    out = ["<table><thead><tr>%s</tr></thead><tbody>" % "".join("<th>%s</th>" % _e(h) for h in headers)]
    for row in rows:
        out.append("<tr>%s</tr>" % "".join("<td>%s</td>" % _e(v) for v in row))
    out.append("</tbody></table>")
    return "\n".join(out)


STYLE = """
body { font-family: sans-serif; margin: 24px; color: #263238; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #cfd8dc; padding: 4px 8px; text-align: left; }
th { background: #eceff1; } .status-ok { color: #2e7d32; } .status-warning { color: #b28704; } .status-action { color: #c62828; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
"""


def render(report):
    """The whole page."""
    legend = "".join('<span style="background:%s"></span>%s' % (COLOURS[k], _e(text)) for k, text in (
        ("ok", "below the warning level"), ("warning", "warning"), ("action", "at or over the action point"),
        ("workload", "use of the requests")))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Apex capacity report %s</title>" % _e(report.get("finished")),
        "<style>%s</style></head><body>" % STYLE,
        "<h1>Apex capacity report</h1>",
        '<p>Namespace %s, %s. Status: <strong class="status-%s">%s</strong>.</p>' % (
            _e(report.get("namespace")), _e(report.get("finished")), _e(report["status"]), _e(report["status"])),
        '<p class="legend">%s; solid line: action point, dashed: warning level.</p>' % legend,
        "<h2>Usage against thresholds</h2>", usage_chart(report["table"]),
        "<h2>Use as percent of the requests</h2>", workload_chart(report["workloads"], report["limits"]),
        "<h2>Capacity table (runbook)</h2>",
        _table(["Resource", "Current", "Use", "Threshold", "Action point", "Status", "Source"],
               [(r["resource"], r["current"], "" if r["percent"] is None else "%s%%" % r["percent"], r["threshold"],
                 r["action_point"], r["status"], r["detail"]) for r in report["table"]]),
        "<h2>Recommendations</h2>",
        "<ul>%s</ul>" % ("".join("<li>%s</li>" % _e(r["text"]) for r in report["recommendations"])
                         or "<li>none: every figure is under its warning level</li>"),
        "<h2>Cost notes</h2>",
        "<ul>%s</ul>" % ("".join("<li>%s</li>" % _e(n["text"]) for n in report["cost_notes"])
                         or "<li>none: every workload uses a fair share of its requests</li>"),
        "<h2>Node-count outlook</h2>", "<p>%s</p>" % _e(report["node_outlook"].get("detail")),
        "<h2>Daily figures</h2>",
        _table(["Figure", "Value"], [("pods", report["daily"]["pods"]), ("database size", report["daily"]["db_size"]),
                                     ("database connections", report["daily"]["db_connections"]),
                                     ("Redis used memory", report["daily"]["redis_used_memory_human"]),
                                     ("queue depth", report["daily"]["queue_depth"])]),
        _table(["Node", "CPU (m)", "CPU %", "Memory (MiB)", "Memory %"],
               [(n["name"], n["cpu_millicores"], n.get("cpu_percent"), n["memory_mib"], n.get("memory_percent"))
                for n in report["daily"]["top_nodes"]]),
        _table(["Pod", "CPU (m)", "CPU % of request", "Memory (MiB)", "Memory % of request"],
               [(p["name"], p["cpu_millicores"], p.get("cpu_percent_of_request"), p["memory_mib"],
                 p.get("memory_percent_of_request")) for p in report["daily"]["top_pods"]]),
    ]
    if report.get("errors"):
        parts += ["<h2>Not read</h2>", _table(["Part", "Error"], sorted(report["errors"].items()))]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
