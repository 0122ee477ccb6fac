#!/usr/bin/env python3
"""Tests for bench/svg.py: run with `python3 -m unittest discover -s bench -p '*_test.py'`
(make test does)."""
import json
import os
import tempfile
import unittest
import xml.etree.ElementTree as ET

import report
import svg

NS = "{http://www.w3.org/2000/svg}"

# Two rounds of three targets, as run.sh writes RESULTS.tsv.
SAMPLE = [
    # round target requests rps p50 p99 errors non2xx cpu_s cpu/req user sys backend
    ["1", "holdfast", "100000", "20000.0", "900.0", "4000.0", "0", "0", "1.0", "10.0", "6.0", "4.0", "5.0"],
    ["1", "haproxy", "100000", "21000.0", "850.0", "3900.0", "0", "0", "1.0", "11.0", "6.0", "5.0", "5.0"],
    ["1", "nginx", "100000", "19000.0", "950.0", "5200.0", "0", "0", "1.0", "12.0", "7.0", "5.0", "5.0"],
    ["2", "holdfast", "100000", "22000.0", "800.0", "3000.0", "0", "0", "1.0", "9.0", "5.0", "4.0", "5.0"],
    ["2", "haproxy", "100000", "20000.0", "870.0", "4100.0", "0", "0", "1.0", "10.0", "6.0", "4.0", "5.0"],
    ["2", "nginx", "100000", "18000.0", "990.0", "5400.0", "0", "0", "1.0", "13.0", "8.0", "5.0", "5.0"],
]


def bars(path):
    root = ET.parse(path).getroot()  # raises on invalid XML
    assert root.tag == NS + "svg", root.tag
    return [(r.get("data-target"), float(r.get("data-value"))) for r in root.iter(NS + "rect")
            if r.get("class") == "bar"]


class HTTPCharts(unittest.TestCase):
    def test_one_bar_per_target_at_the_median(self):
        with tempfile.TemporaryDirectory() as d:
            tsv = os.path.join(d, "results.tsv")
            with open(tsv, "w") as f:
                f.write("\t".join(report.COLUMNS) + "\n")
                for r in SAMPLE:
                    f.write("\t".join(r) + "\n")
            os.environ["TARGETS"] = "holdfast haproxy nginx"
            written = svg.http_charts(tsv, d)
            self.assertEqual(sorted(os.path.basename(p) for p in written), ["cpu.svg", "p99.svg", "rps.svg"])
            want = {
                "rps.svg": [("holdfast", 21000.0), ("haproxy", 20500.0), ("nginx", 18500.0)],
                "cpu.svg": [("holdfast", 9.5), ("haproxy", 10.5), ("nginx", 12.5)],
                "p99.svg": [("holdfast", 3.5), ("haproxy", 4.0), ("nginx", 5.3)],
            }
            for name, exp in want.items():
                got = bars(os.path.join(d, name))
                self.assertEqual([t for t, _ in got], [t for t, _ in exp], name)
                for (_, g), (_, e) in zip(got, exp):
                    self.assertAlmostEqual(g, e, places=6, msg=name)
            # two rounds: a spread whisker per bar
            root = ET.parse(os.path.join(d, "rps.svg")).getroot()
            self.assertEqual(sum(1 for p in root.iter(NS + "path") if p.get("class") == "spread"), 3)


class IdleCharts(unittest.TestCase):
    def test_grouped_by_connection_count(self):
        rows = []
        for n in (5000, 10000):
            for t, b, g in (("holdfast", 1500, 12), ("haproxy", 1100, -1), ("nginx", 500, -1)):
                for k in range(3):
                    rows.append({"target": t, "conns": n, "bytes_per_conn": b + k * 10, "goroutines": g})
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "results.jsonl")
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            svg.idle_charts(path, d)
            got = bars(os.path.join(d, "idle-bytes.svg"))
            self.assertEqual(got, [("holdfast", 1510.0), ("haproxy", 1110.0), ("nginx", 510.0)] * 2)
            # goroutines are only known for holdfast (-1: not reported)
            self.assertEqual(bars(os.path.join(d, "idle-goroutines.svg")), [("holdfast", 12.0)] * 2)


class Escaping(unittest.TestCase):
    def test_names_are_escaped(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.svg")
            with open(p, "w") as f:
                f.write(svg.bar_chart('a <"title"> & more', "u&s", [("g<1>", [("t<&>", 3.0, 1.0, 4.0)])], True))
            self.assertEqual(bars(p), [("t<&>", 3.0)])


if __name__ == "__main__":
    unittest.main()
