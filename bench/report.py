#!/usr/bin/env python3
"""Arithmetic and tables for bench/run.sh.

  report.py row    --round N --target T --wrk FILE --proxy-ticks N|- \
                   --backend-ticks N --clk-tck HZ          -> one TSV row on stdout
  report.py round  RESULTS.tsv N                            -> table for round N
  report.py median RESULTS.tsv                              -> median table across rounds

RESULTS.tsv columns (header written by `report.py header`):
  round target requests rps p50_us p99_us errors non2xx
  proxy_cpu_s proxy_cpu_us_per_req proxy_user_us_per_req proxy_sys_us_per_req
  backend_cpu_us_per_req   (proxy = the proxy and its direct children; backend
  CPU is informational: the upstream's cost per request through that target)

Ratios are relative to the $BASELINE row (default `haproxy`) of the same round. In the median
table each ratio is the median of the per-round (paired) ratios, which is more
robust on a noisy machine than a ratio of two medians taken from different
rounds.
"""
import argparse
import os
import re
import statistics
import sys

COLUMNS = ["round", "target", "requests", "rps", "p50_us", "p99_us", "errors",
           "non2xx", "proxy_cpu_s", "proxy_cpu_us_per_req", "proxy_user_us_per_req",
           "proxy_sys_us_per_req", "backend_cpu_us_per_req"]
BASELINE = os.environ.get("BASELINE", "haproxy")  # the row ratios are relative to
UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_wrk(text):
    """Extract requests, req/s, p50/p99 (µs) and error counts from wrk --latency output."""
    out = {"errors": 0, "non2xx": 0}
    m = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if not m:
        raise SystemExit("report.py: no request count in wrk output")
    out["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    out["rps"] = float(m.group(1)) if m else 0.0
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(r"^\s*%s(?:\.0+)?%%\s+([\d.]+)(us|ms|s|m|h)\s*$" % pct, text, re.M)
        out[key] = float(m.group(1)) * UNIT_US[m.group(2)] if m else float("nan")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] = sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def cmd_row(a):
    with open(a.wrk) as f:
        w = parse_wrk(f.read())
    req = max(w["requests"], 1)
    per_req = lambda ticks: "%.3f" % (ticks / a.clk_tck / req * 1e6)
    if a.proxy_ticks == "-":
        pcpu_s = pcpu = pusr = psys = "-"
    else:
        u, s = (int(x) for x in a.proxy_ticks.split(":"))  # USER:SYS clock ticks
        pcpu_s = "%.3f" % ((u + s) / a.clk_tck)
        pcpu, pusr, psys = per_req(u + s), per_req(u), per_req(s)
    row = [a.round, a.target, w["requests"], "%.1f" % w["rps"], "%.1f" % w["p50_us"],
           "%.1f" % w["p99_us"], w["errors"], w["non2xx"], pcpu_s, pcpu, pusr, psys,
           per_req(int(a.backend_ticks))]
    print("\t".join(str(x) for x in row))


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if not parts or parts[0] == "round" or len(parts) != len(COLUMNS):
                continue
            r = dict(zip(COLUMNS, parts))
            for k in ("rps", "p50_us", "p99_us", "proxy_cpu_us_per_req", "proxy_user_us_per_req",
                      "proxy_sys_us_per_req", "backend_cpu_us_per_req"):
                r[k] = None if r[k] in ("-", "", "nan") else float(r[k])
            for k in ("requests", "errors", "non2xx"):
                r[k] = int(r[k])
            rows.append(r)
    return rows


def order(rows):
    """Targets in $TARGETS order (as run.sh lists them), then any others as first seen."""
    seen = [t for t in os.environ.get("TARGETS", "").split() if any(r["target"] == t for r in rows)]
    for r in rows:
        if r["target"] not in seen:
            seen.append(r["target"])
    return seen


def fmt_lat(us):
    if us is None:
        return "-"
    return "%.0fus" % us if us < 1000 else "%.2fms" % (us / 1000)


def fmt(v, spec):
    return "-" if v is None else spec % v


def ratios(r, base):
    cpu = rps = None
    if base is not None:
        if r["proxy_cpu_us_per_req"] is not None and base["proxy_cpu_us_per_req"]:
            cpu = r["proxy_cpu_us_per_req"] / base["proxy_cpu_us_per_req"]
        if r["rps"] is not None and base["rps"]:
            rps = r["rps"] / base["rps"]
    return cpu, rps


def render(title, header, lines):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = [title]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    out.append(line(header))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend(line(l) for l in lines)
    return "\n".join(out)


_LABEL = "HAProxy" if BASELINE == "haproxy" else BASELINE
HEADER = ["target", "req/s", "p50", "p99", "CPU us/req", "CPU vs " + _LABEL, "rps vs " + _LABEL, "errors"]


def cmd_round(a):
    rows = [r for r in load(a.results) if r["round"] == str(a.n)]
    rank = {t: i for i, t in enumerate(order(rows))}
    rows.sort(key=lambda r: rank[r["target"]])
    base = next((r for r in rows if r["target"] == BASELINE), None)
    lines = []
    for r in rows:
        cpu, rps = ratios(r, base)
        lines.append([r["target"], fmt(r["rps"], "%.0f"), fmt_lat(r["p50_us"]), fmt_lat(r["p99_us"]),
                      fmt(r["proxy_cpu_us_per_req"], "%.2f"), fmt(cpu, "%.2fx"), fmt(rps, "%.2fx"),
                      r["errors"] + r["non2xx"]])
    print(render("round %s" % a.n, HEADER, lines))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cmd_median(a):
    rows = load(a.results)
    rounds = sorted({r["round"] for r in rows}, key=int)
    by = {(r["round"], r["target"]): r for r in rows}
    lines = []
    for t in order(rows):
        rs = [by[(n, t)] for n in rounds if (n, t) in by]
        cpu_r, rps_r = [], []
        for n in rounds:
            if (n, t) in by:
                c, p = ratios(by[(n, t)], by.get((n, BASELINE)))
                cpu_r.append(c)
                rps_r.append(p)
        cpus = [r["proxy_cpu_us_per_req"] for r in rs if r["proxy_cpu_us_per_req"] is not None]
        spread = "%.2f-%.2f" % (min(cpus), max(cpus)) if cpus else "-"
        lines.append([t, fmt(med(r["rps"] for r in rs), "%.0f"),
                      fmt_lat(med(r["p50_us"] for r in rs)), fmt_lat(med(r["p99_us"] for r in rs)),
                      fmt(med(cpus), "%.2f"), fmt(med(cpu_r), "%.2fx"), fmt(med(rps_r), "%.2fx"),
                      sum(r["errors"] + r["non2xx"] for r in rs), spread, len(rs)])
    print(render("MEDIAN across %d round(s)" % len(rounds),
                 HEADER + ["CPU us/req min-max", "rounds"], lines))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("header")
    r = sub.add_parser("row")
    r.add_argument("--round", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--wrk", required=True)
    r.add_argument("--proxy-ticks", required=True, help="USER:SYS clock ticks, or - for no proxy")
    r.add_argument("--backend-ticks", required=True)
    r.add_argument("--clk-tck", type=int, required=True)
    t = sub.add_parser("round")
    t.add_argument("results")
    t.add_argument("n")
    m = sub.add_parser("median")
    m.add_argument("results")
    a = p.parse_args()
    if a.cmd == "header":
        print("\t".join(COLUMNS))
    elif a.cmd == "row":
        cmd_row(a)
    elif a.cmd == "round":
        cmd_round(a)
    else:
        cmd_median(a)


if __name__ == "__main__":
    sys.exit(main())
