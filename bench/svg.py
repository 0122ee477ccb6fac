#!/usr/bin/env python3
"""SVG bar charts for the bench tables, with no plotting library (Debian's
python3 here has no matplotlib): plain SVG 1.1 text, one <rect class="bar">
per target (or per target and connection count), a whisker for the spread
across rounds where there is one, and the value printed on each bar.

  svg.py http RESULTS.tsv OUTDIR   -> OUTDIR/rps.svg, cpu.svg, p99.svg
                                      (median across rounds per target,
                                      whisker min..max)
  svg.py idle RESULTS.jsonl OUTDIR -> OUTDIR/idle-bytes.svg,
                                      idle-goroutines.svg (per N and target)
"""
import json
import math
import os
import statistics
import sys
from xml.sax.saxutils import escape

import report  # bench/report.py: the TSV loader and target order

COLORS = {"holdfast": "#2b6cb0", "haproxy": "#c05621", "nginx": "#2f855a", "direct": "#718096"}
OTHER = ["#6b46c1", "#b7791f", "#c53030", "#319795"]


def color(target, i):
    return COLORS.get(target, OTHER[i % len(OTHER)])


def bar_chart(title, unit, groups, lower_is_better):
    """groups: [(group label or "", [(target, value, lo, hi)])] -> SVG text.

    lo/hi (may be None) draw a whisker. Each group is a cluster of bars,
    one per target, in the order given."""
    bar_w, gap, group_gap, left, top, plot_h = 34, 6, 26, 64, 40, 180
    n_bars = sum(len(items) for _, items in groups)
    width = left + n_bars * (bar_w + gap) + len(groups) * group_gap + 20
    height = top + plot_h + 70
    vmax = max([v for _, items in groups for _, v, lo, hi in items if v is not None] +
               [hi for _, items in groups for _, v, lo, hi in items if hi is not None] + [0])
    vmax = nice(vmax * 1.1) if vmax > 0 else 1.0
    width = max(width, left + 8 * len(title) + 20, left + 6 * len(unit) + 120)
    y = lambda v: top + plot_h - v / vmax * plot_h
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" font-size="11">' % (width, height, width, height),
           '<title>%s</title>' % escape(title),
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           '<text x="%d" y="18" font-size="13" font-weight="bold">%s</text>' % (left, escape(title)),
           '<text x="%d" y="32" fill="#555">%s (%s is better)</text>' % (
               left, escape(unit), "lower" if lower_is_better else "higher")]
    for k in range(6):  # gridlines
        v = vmax * k / 5
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, width - 10, y(v), y(v)))
        out.append('<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>' % (left - 4, y(v) + 4, num(v)))
    x = left + group_gap / 2
    for label, items in groups:
        x0 = x
        for i, (target, v, lo, hi) in enumerate(items):
            if v is not None:
                out.append('<rect class="bar" data-target="%s" data-value="%s" x="%.1f" y="%.1f" width="%d" '
                           'height="%.1f" fill="%s"><title>%s: %s %s</title></rect>' % (
                               escape(target), repr(v), x, y(v), bar_w, top + plot_h - y(v), color(target, i),
                               escape(target), num(v), escape(unit)))
                out.append('<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>' % (
                    x + bar_w / 2, y(max(v, hi or 0)) - 4, num(v)))
            if lo is not None and hi is not None:
                cx = x + bar_w / 2
                out.append('<path class="spread" d="M%.1f %.1fV%.1fM%.1f %.1fh8M%.1f %.1fh8" stroke="#222" '
                           'fill="none"/>' % (cx, y(lo), y(hi), cx - 4, y(lo), cx - 4, y(hi)))
            out.append('<text x="%.1f" y="%d" text-anchor="end" transform="rotate(-35 %.1f %d)">%s</text>' % (
                x + bar_w / 2 + 4, top + plot_h + 14, x + bar_w / 2 + 4, top + plot_h + 14, escape(target)))
            x += bar_w + gap
        if label:
            out.append('<text x="%.1f" y="%d" text-anchor="middle" font-weight="bold">%s</text>' % (
                (x0 + x - gap) / 2, height - 6, escape(label)))
        x += group_gap
    out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>' % (left, width - 10, top + plot_h, top + plot_h))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def nice(v):
    """The smallest 1, 2, 2.5 or 5 × 10^k that is ≥ v: round gridlines."""
    k = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * k >= v:
            return m * k
    return 10 * k


def num(v):
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def stat(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def http_charts(results, outdir):
    rows = report.load(results)
    charts = [("rps.svg", "Requests per second (median of rounds, whisker min..max)", "req/s", "rps", 1, False),
              ("cpu.svg", "Proxy CPU per request", "us/request", "proxy_cpu_us_per_req", 1, True),
              ("p99.svg", "p99 latency", "ms", "p99_us", 1e-3, True)]
    written = []
    for name, title, unit, key, scale, lower in charts:
        items = []
        for t in report.order(rows):
            vals = [r[key] * scale for r in rows if r["target"] == t and r[key] is not None]
            m, lo, hi = stat(vals)
            if m is not None:
                items.append((t, m, lo if len(vals) > 1 else None, hi if len(vals) > 1 else None))
        if not items:
            continue
        path = os.path.join(outdir, name)
        with open(path, "w") as f:
            f.write(bar_chart(title, unit, [("", items)], lower))
        written.append(path)
    return written


def idle_charts(results, outdir):
    with open(results) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    ns, targets = [], []
    for r in rows:
        if r["conns"] not in ns:
            ns.append(r["conns"])
        if r["target"] not in targets:
            targets.append(r["target"])
    written = []
    for name, title, unit, key in [
            ("idle-bytes.svg", "Memory per idle keep-alive connection (RSS growth / N)", "bytes/conn", "bytes_per_conn"),
            ("idle-goroutines.svg", "Goroutines while N connections idle (holdfast only)", "goroutines", "goroutines")]:
        groups = []
        for n in ns:
            items = []
            for t in targets:
                vals = [r[key] for r in rows if r["conns"] == n and r["target"] == t and r.get(key, -1) >= 0]
                m, lo, hi = stat(vals)
                if m is not None:
                    items.append((t, m, lo if len(vals) > 1 else None, hi if len(vals) > 1 else None))
            if items:
                groups.append(("N = %d" % n, items))
        if not groups:
            continue
        path = os.path.join(outdir, name)
        with open(path, "w") as f:
            f.write(bar_chart(title, unit, groups, True))
        written.append(path)
    return written


def main(argv):
    if len(argv) != 4 or argv[1] not in ("http", "idle"):
        print(__doc__, file=sys.stderr)
        return 2
    os.makedirs(argv[3], exist_ok=True)
    written = (http_charts if argv[1] == "http" else idle_charts)(argv[2], argv[3])
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
