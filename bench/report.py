#!/usr/bin/env python3
"""Turns the results of bench/run into a markdown report and SVG plots.

    report.py RESULTS.jsonl OUTDIR

Reads the JSON lines bench/run records (kinds "load", "memory" and "scale"), writes
OUTDIR/results.md and prints it, and writes the plots for the data present:
OUTDIR/side-by-side.svg and OUTDIR/scale-{actions,policies,held,audit}.svg. Every load figure
is the median over the rounds of its (target, mode); a section whose records are missing
(e.g. after `bench/run --no-scaling`) is left out. Standard library only.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from collections import namedtuple
from pathlib import Path
from xml.sax.saxutils import escape

TARGETS = ("direct", "nginx", "portcullis")
KIB_PER_MIB = 1024

# DESIGN.md section 7, the budgets this script's data covers.
BUDGET_ADDED_US = {"p50": 100, "p99": 300}
BUDGET_CPU_US = 100
BUDGET_SATURATION_SHARE = 0.35
BUDGET_IDLE_MIB = 30
BUDGET_HELD_MIB = 200

# Colour-blind-safe (Okabe-Ito) colours and a marker shape per series.
STYLE = {
    "p50": ("#0072B2", "circle"),
    "p99": ("#E69F00", "square"),
    "p99.9": ("#D55E00", "diamond"),
    "RSS": ("#009E73", "circle"),
    "verify": ("#CC79A7", "circle"),
    "saturation": ("#56B4E9", "square"),
}
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"

Series = namedtuple("Series", "name colour shape points")
Column = namedtuple("Column", "header get spec")


# --- data ------------------------------------------------------------------------------------

def read_records(path):
    """The JSON objects of a JSON-lines file, skipping blank lines."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"report.py: {path}:{number}: {e}")
    return records


def value(record, key):
    """record[key] if the record exists and the field is a number, else None."""
    v = record.get(key) if record else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def median_record(records):
    """One record holding the median of every numeric field (other fields from the first
    record that has them) and, as "rounds", how many records were merged."""
    merged = {}
    for key in dict.fromkeys(k for r in records for k in r):
        numbers = [value(r, key) for r in records if value(r, key) is not None]
        merged[key] = statistics.median(numbers) if numbers else next(r[key] for r in records if key in r)
    merged["rounds"] = len(records)
    return merged


def aggregate(records, *fields):
    """Records grouped by the values of fields, each group merged by median_record."""
    groups = {}
    for r in records:
        groups.setdefault(tuple(r.get(f) for f in fields), []).append(r)
    return {key: median_record(group) for key, group in groups.items()}


def added(load, target, percentile):
    """Latency the target adds over direct at the fixed rate, in µs (None if unmeasured)."""
    there = value(load.get((target, "rate")), f"{percentile}_us")
    direct = value(load.get(("direct", "rate")), f"{percentile}_us")
    return None if there is None or direct is None else there - direct


def ratio(a, b):
    """a / b, or None when either is missing or b is not positive."""
    return None if a is None or b is None or b <= 0 else a / b


def mib(kib):
    """KiB to MiB (None stays None)."""
    return None if kib is None else kib / KIB_PER_MIB


def held_memory(memory):
    """The memory record taken under held intents and its count of them, or (None, None)."""
    for (what,), record in memory.items():
        if "held" in str(what):
            held = value(record, "held")
            count = str(what).split()[0].replace(",", "")
            if held is None and count.isdigit():
                held = int(count)
            return record, held
    return None, None


# --- markdown --------------------------------------------------------------------------------

def fmt(v, spec=",.0f", suffix=""):
    """A number formatted with spec and suffix, or an em dash when it is missing."""
    return "—" if v is None else f"{v:{spec}}{suffix}"


def table(headers, rows, numeric_from=1):
    """A markdown table; columns from numeric_from on are right-aligned."""
    align = ["---" if i < numeric_from else "--:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def side_by_side_section(load, rate_rps, plotted):
    """Table 1: throughput, latency and CPU per target, their ratios to direct and nginx, and
    a link to the plot if there is one."""
    rounds = sorted({int(r["rounds"]) for r in load.values()})
    per_target = ", ".join(f"{t} {fmt(value(load.get((t, 'rate')), 'rps'))}" for t in TARGETS
                           if (t, "rate") in load)
    about = f"Medians over {'/'.join(map(str, rounds))} round(s). Saturation: as fast as wrk can send."
    if rate_rps is not None:
        about += (f" Latency: at a fixed rate, measured {fmt(rate_rps)} req/s (median of the rate runs; "
                  f"per target: {per_target}). CPU: user+system time of the proxy's processes per "
                  "request at the fixed rate (the upstream's is not counted). Added latency: the "
                  "target's percentile minus direct's.")
    lines = ["## Side by side", "", about, ""]
    sat = {t: value(load.get((t, "saturation")), "rps") for t in TARGETS}
    rows = []
    for t in TARGETS:
        if (t, "saturation") not in load and (t, "rate") not in load:
            continue
        rate = load.get((t, "rate"))
        vs_nginx = ["—", "—"]
        if t == "portcullis":
            added_ratio = [ratio(added(load, t, p), added(load, "nginx", p)) for p in ("p50", "p99")]
            vs_nginx = [fmt(ratio(sat[t], sat["nginx"]), ".1%"),
                        " / ".join(fmt(r, ".2f", "×") for r in added_ratio)]
        rows.append([
            t, fmt(sat[t]),
            fmt(value(rate, "p50_us")), fmt(value(rate, "p99_us")), fmt(value(rate, "p999_us")),
            fmt(value(rate, "cpu_us_per_request"), ",.1f"),
            fmt(ratio(sat[t], sat["direct"]), ".1%"), vs_nginx[0],
            "—" if t == "direct" else fmt(added(load, t, "p50"), "+,.0f"),
            "—" if t == "direct" else fmt(added(load, t, "p99"), "+,.0f"),
            vs_nginx[1],
        ])
    lines += table(["target", "saturation req/s", "p50 µs", "p99 µs", "p99.9 µs", "CPU µs/req",
                    "throughput vs direct", "throughput vs nginx", "added p50 µs", "added p99 µs",
                    "added vs nginx (p50 / p99)"], rows)
    if plotted:
        lines += ["", "![Side by side: saturation throughput and latency per target](side-by-side.svg)"]
    return lines + [""]


def budget_rows(load, memory, rate_rps):
    """(budget, measured, limit, met) for every DESIGN §7 budget the data covers."""
    rows = []
    # The gateway's own rate: wrk paces each connection after its response, so a slow
    # target runs below the rate asked for, and the budgets are read at the rate it ran.
    own = value(load.get(("portcullis", "rate")), "rps")
    at = f"at {fmt(own if own is not None else rate_rps)} req/s"
    for percentile, limit in BUDGET_ADDED_US.items():
        extra = added(load, "portcullis", percentile)
        if extra is not None:
            rows.append((f"added latency {percentile} {at} (portcullis − direct)",
                         f"{extra:+,.0f} µs", f"≤ {limit} µs", extra <= limit))
    cpu = value(load.get(("portcullis", "rate")), "cpu_us_per_request")
    if cpu is not None:
        rows.append((f"CPU per intent (gateway process) {at}", f"{cpu:,.1f} µs", f"≤ {BUDGET_CPU_US} µs",
                     cpu <= BUDGET_CPU_US))
    share = ratio(value(load.get(("portcullis", "saturation")), "rps"),
                  value(load.get(("direct", "saturation")), "rps"))
    if share is not None:
        rows.append(("saturation throughput vs direct", f"{share:.1%}", f"≥ {BUDGET_SATURATION_SHARE:.0%}",
                     share >= BUDGET_SATURATION_SHARE))
    idle = mib(value(memory.get(("idle",)), "rss_kib"))
    if idle is not None:
        rows.append(("memory at idle (RSS)", f"{idle:,.1f} MiB", f"≤ {BUDGET_IDLE_MIB} MiB",
                     idle <= BUDGET_IDLE_MIB))
    record, held = held_memory(memory)
    under_held = mib(value(record, "rss_kib"))
    if under_held is not None:
        rows.append((f"memory under {fmt(held)} concurrent held intents, long-polled (RSS)",
                     f"{under_held:,.1f} MiB", f"≤ {BUDGET_HELD_MIB} MiB", under_held <= BUDGET_HELD_MIB))
    return rows


def budget_section(load, memory, rate_rps):
    """Table 2: PASS/MISS against DESIGN §7, plus where the other budgets are measured."""
    rows = budget_rows(load, memory, rate_rps)
    if not rows:
        return []
    lines = ["## Budgets (DESIGN §7)", ""]
    lines += table(["what", "measured", "budget", "result"],
                   [[name, measured, limit, "PASS" if met else "**MISS**"] for name, measured, limit, met in rows])
    met = sum(1 for row in rows if row[3])
    lines += ["", f"{met} of {len(rows)} budgets met. The other budgets — policy decision p99 with 1,000 "
              "policies (≤ 50 µs), durable audit appends (≥ 10,000 events/s) and redaction "
              "(≥ 200 MB/s per core) — are measured by the cargo benches (`cargo bench`), not by "
              "this script.", ""]
    return lines


def memory_section(memory):
    """Every memory reading of the gateway."""
    rows = [[str(what), fmt(mib(value(r, "rss_kib")), ",.1f")] for (what,), r in memory.items()]
    return ["## Memory", "", "Resident set size of the gateway process.", ""] + table(["state", "RSS MiB"], rows) + [""]


def field(key, factor=1.0):
    """A getter for a numeric field of a point, multiplied by factor."""
    return lambda point: None if value(point, key) is None else value(point, key) * factor


LATENCY_COLUMNS = [
    Column("req/s", field("rps"), ",.0f"),
    Column("p50 µs", field("p50_us"), ",.0f"),
    Column("p99 µs", field("p99_us"), ",.0f"),
    Column("p99.9 µs", field("p999_us"), ",.0f"),
    Column("CPU µs/req", field("cpu_us_per_request"), ",.1f"),
    Column("RSS MiB", field("rss_kib", 1 / KIB_PER_MIB), ",.1f"),
]
AUDIT_COLUMNS = [
    Column("fill s", field("fill_seconds"), ",.1f"),
    Column("fill events/s", field("fill_per_second"), ",.0f"),
    Column("database MiB", field("db_bytes", 1 / KIB_PER_MIB ** 2), ",.1f"),
    Column("verify s", field("verify_seconds"), ",.2f"),
    Column("verified events/s", lambda p: ratio(value(p, "x"), value(p, "verify_seconds")), ",.0f"),
    Column("verify peak RSS MiB", field("verify_max_rss_kib", 1 / KIB_PER_MIB), ",.1f"),
]
CURVES = {
    "actions": ("Scaling: number of actions", "actions configured", LATENCY_COLUMNS,
                "Each point is a fresh gateway with this many actions configured, measured at the fixed rate."),
    "policies": ("Scaling: number of policies", "policies loaded", LATENCY_COLUMNS,
                 "Each point is a fresh gateway with this many Cedar policies, measured at the fixed rate."),
    "held": ("Scaling: held intents", "held intents", LATENCY_COLUMNS,
             "Latency of new intents and gateway RSS while this many intents are held."),
    "audit": ("Scaling: audit log size", "audit events", AUDIT_COLUMNS,
              "`portcullis audit verify` over a log of this many events: its wall time and peak RSS."),
}


def scaling_section(curve, points, plotted):
    """A curve's points as a table, and a link to its plot if it has one."""
    title, x_label, columns, description = CURVES[curve]
    columns = [c for c in columns if any(c.get(p) is not None for p in points)]
    rows = [[fmt(value(p, "x"))] + [fmt(c.get(p), c.spec) for c in columns] for p in points]
    lines = [f"## {title}", "", description, ""] + table([x_label] + [c.header for c in columns], rows)
    if any((value(p, "x") or 0) <= 0 for p in points):
        lines += ["", "Points at x ≤ 0 are in the table only (the plot's x axis is logarithmic)."]
    return lines + (["", f"![{title}](scale-{curve}.svg)"] if plotted else []) + [""]


# --- SVG -------------------------------------------------------------------------------------

class Svg:
    """A minimal SVG document builder."""

    def __init__(self, width, height):
        self.width, self.height, self.parts = width, height, []

    def add(self, tag, text=None, **attrs):
        """Appends an element with text content or none; attribute names use _ for -."""
        rendered = " ".join(f'{k.replace("_", "-")}="{escape(self._format(v), {chr(34): "&quot;"})}"'
                            for k, v in attrs.items())
        self.parts.append(f"<{tag} {rendered}/>" if text is None
                          else f"<{tag} {rendered}>{escape(text)}</{tag}>")

    @staticmethod
    def _format(v):
        """An attribute value as text, coordinates to a tenth of a pixel."""
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    def text(self, x, y, text, anchor="start", size=12, weight="normal", fill="#222", rotate=False):
        """A text label; rotate turns it to read bottom-up (for a y axis)."""
        extra = {"transform": f"rotate(-90 {x:.1f} {y:.1f})"} if rotate else {}
        self.add("text", text, x=x, y=y, text_anchor=anchor, font_size=size, font_weight=weight, fill=fill,
                 **extra)

    def line(self, x1, y1, x2, y2, stroke, width=1.0):
        """A straight line."""
        self.add("line", x1=x1, y1=y1, x2=x2, y2=y2, stroke=stroke, stroke_width=width)

    def marker(self, shape, x, y, colour):
        """A point marker: circle, square or diamond."""
        outline = {"fill": colour, "stroke": "white", "stroke_width": 0.8}
        if shape == "circle":
            self.add("circle", cx=x, cy=y, r=3.5, **outline)
        elif shape == "square":
            self.add("rect", x=x - 3.3, y=y - 3.3, width=6.6, height=6.6, **outline)
        else:
            corners = ((x, y - 4.5), (x + 4.5, y), (x, y + 4.5), (x - 4.5, y))
            self.add("polygon", points=" ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in corners), **outline)

    def legend(self, right, y, series):
        """Legend entries (marker, line, name) laid out leftwards from right."""
        x = right
        for s in reversed(series):
            x -= 7 * len(s.name) + 34
            self.line(x, y - 4, x + 20, y - 4, s.colour, 2)
            self.marker(s.shape, x + 10, y - 4, s.colour)
            self.text(x + 25, y, s.name, size=11)

    def render(self, title):
        """The document as text."""
        head = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" font-family="{FONT}">\n'
                f"<title>{escape(title)}</title>\n"
                f'<rect x="0" y="0" width="{self.width}" height="{self.height}" fill="white"/>\n')
        return head + "\n".join(self.parts) + "\n</svg>\n"


def short(v):
    """A compact label for a count: 250, 2.5k, 10M."""
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= divisor:
            return f"{round(v / divisor, 6):g}{suffix}"
    return f"{round(v, 6):g}"


def plain(v):
    """A tick label for a measurement: 1,500, 0.05."""
    v = round(v, 6)
    return f"{int(v):,}" if v == int(v) else f"{v:g}"


class Scale:
    """Maps data values onto [0, 1], linearly from zero or by decades, and lists its ticks.
    A decade scale keeps a small margin at both ends, so that points on a decade stay clear of
    the frame."""

    LOG_MARGIN = 0.03

    def __init__(self, values, log, label=plain):
        self.log, self.label = log, label
        if log:
            self.lo = math.floor(math.log10(min(values)))
            self.hi = max(math.ceil(math.log10(max(values))), self.lo + 1)
        else:
            top = max(max(values), 0) * 1.05 or 1
            self.step = nice_step(top)
            self.lo, self.hi = 0, math.ceil(top / self.step) * self.step

    @classmethod
    def fit(cls, values, log=None, label=plain):
        """A scale for values, labelling ticks with label; log=None picks decades when the values
        span at least two of them."""
        if log is None:
            log = min(values) > 0 and max(values) / min(values) >= 100
        return cls(values, log, label)

    def frac(self, v):
        """The position of v along the axis, 0 at the low end."""
        if self.log:
            return self.LOG_MARGIN + (1 - 2 * self.LOG_MARGIN) * (math.log10(v) - self.lo) / (self.hi - self.lo)
        return (v - self.lo) / (self.hi - self.lo)

    def ticks(self):
        """(value, label or None for a minor tick) along the axis."""
        if not self.log:
            count = round((self.hi - self.lo) / self.step)
            return [(self.lo + i * self.step, self.label(self.lo + i * self.step)) for i in range(count + 1)]
        ticks = []
        for exponent in range(self.lo, self.hi + 1):
            ticks.append((10.0 ** exponent, self.label(10.0 ** exponent)))
            if exponent < self.hi:
                ticks += [(k * 10.0 ** exponent, None) for k in range(2, 10)]
        return ticks


def nice_step(top, count=5):
    """A 1/2/2.5/5 × 10^n step giving about count intervals up to top."""
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)


def draw_frame(svg, box, x_scale, y_scale, x_label, y_label, subtitle, vertical_grid=True):
    """Gridlines, tick labels, axis labels and the subtitle of a plot area box=(left, top, w, h)."""
    left, top, width, height = box
    bottom = top + height
    for v, label in y_scale.ticks():
        y = bottom - y_scale.frac(v) * height
        svg.line(left, y, left + width, y, "#e4e4e4" if label else "#f2f2f2")
        if label:
            svg.text(left - 6, y + 4, label, anchor="end", size=11, fill="#444")
    if vertical_grid:
        for v, label in x_scale.ticks():
            x = left + x_scale.frac(v) * width
            svg.line(x, top, x, bottom, "#e4e4e4" if label else "#f2f2f2")
            if label:
                svg.line(x, bottom, x, bottom + 4, "#333")
                svg.text(x, bottom + 17, label, anchor="middle", size=11, fill="#444")
    svg.line(left, top, left, bottom, "#333")
    svg.line(left, bottom, left + width, bottom, "#333")
    if x_label:
        svg.text(left + width / 2, bottom + 36, x_label, anchor="middle", size=12)
    svg.text(left - 52, top + height / 2, y_label, anchor="middle", size=12, rotate=True)
    svg.text(left, top - 12, subtitle, size=13, weight="bold")


def draw_lines(svg, box, x_scale, y_scale, series):
    """Each series as a polyline with markers."""
    left, top, width, height = box
    for s in series:
        points = [(left + x_scale.frac(x) * width, top + height - y_scale.frac(y) * height) for x, y in s.points]
        if len(points) > 1:
            svg.add("polyline", points=" ".join(f"{x:.1f},{y:.1f}" for x, y in points),
                    fill="none", stroke=s.colour, stroke_width=2, stroke_linejoin="round")
        for x, y in points:
            svg.marker(s.shape, x, y, s.colour)


def line_figure(title, x_label, panels):
    """Stacked line plots sharing a decade-log x axis; panels are (subtitle, y label, series).
    None when no series has a point."""
    panels = [(sub, label, [s for s in series if s.points]) for sub, label, series in panels]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    left, width, height, block = 80, 650, 210, 300
    svg = Svg(left + width + 30, 50 + block * len(panels))
    svg.text(svg.width / 2, 28, title, anchor="middle", size=16, weight="bold")
    x_scale = Scale.fit([x for _, _, series in panels for s in series for x, _ in s.points], log=True, label=short)
    for i, (subtitle, y_label, series) in enumerate(panels):
        box = (left, 80 + i * block, width, height)
        y_scale = Scale.fit([y for s in series for _, y in s.points])
        if y_scale.log:
            y_label += ", log scale"
        draw_frame(svg, box, x_scale, y_scale, x_label + " (log scale)", y_label, subtitle)
        draw_lines(svg, box, x_scale, y_scale, series)
        if len(series) > 1:
            svg.legend(left + width, box[1] - 12, series)
    return svg.render(title)


def series(points, name, get):
    """A plot series of (x, get(point)) for the points with x > 0 and a value, styled by name."""
    colour, shape = STYLE[name]
    pairs = [(value(p, "x"), get(p)) for p in points]
    return Series(name, colour, shape, [(x, y) for x, y in pairs if x is not None and x > 0 and y is not None])


def scale_figure(curve, points):
    """The plot of one scaling curve: latency and RSS (or verify time and RSS for audit);
    None when it has no point to plot."""
    title, x_label, _, _ = CURVES[curve]
    if curve == "audit":
        panels = [("audit verify: wall time", "time (s)", [series(points, "verify", field("verify_seconds"))]),
                  ("audit verify: peak memory", "RSS (MiB)",
                   [series(points, "RSS", field("verify_max_rss_kib", 1 / KIB_PER_MIB))])]
    else:
        rates = [value(p, "rps") for p in points if value(p, "rps") is not None]
        at = f" at {fmt(statistics.median(rates))} req/s" if rates else ""
        panels = [(f"Latency of an intent{at}", "latency (µs)",
                   [series(points, name, field(key)) for name, key in
                    (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"))]),
                  ("Gateway resident memory", "RSS (MiB)", [series(points, "RSS", field("rss_kib", 1 / KIB_PER_MIB))])]
    return line_figure(title, x_label, panels)


def draw_bars(svg, box, groups, bar_series, y_label, subtitle):
    """Grouped bars with value labels; bar_series are Series whose points are one value per group."""
    left, top, width, height = box
    y_scale = Scale.fit([v for s in bar_series for v in s.points if v is not None], log=False)
    draw_frame(svg, box, None, y_scale, None, y_label, subtitle, vertical_grid=False)
    slot = width / len(groups)
    bar = slot * 0.7 / len(bar_series)
    for g, group in enumerate(groups):
        start = left + g * slot + slot * 0.15
        for i, s in enumerate(bar_series):
            v = s.points[g]
            if v is None:
                continue
            x, h = start + i * bar, y_scale.frac(v) * height
            svg.add("rect", x=x + 1, y=top + height - h, width=bar - 2, height=h, fill=s.colour)
            svg.text(x + bar / 2, top + height - h - 4, fmt(v), anchor="middle", size=10, fill="#333")
        svg.text(left + (g + 0.5) * slot, top + height + 17, group, anchor="middle", size=12)
    if len(bar_series) > 1:
        svg.legend(left + width, top - 12, bar_series)


def side_by_side_figure(load):
    """Bar charts: saturation throughput per target, and p50/p99 latency at the fixed rate;
    None when the load records have neither."""
    targets = [t for t in TARGETS if (t, "saturation") in load or (t, "rate") in load]
    panels = []
    saturation = [value(load.get((t, "saturation")), "rps") for t in targets]
    if any(v is not None for v in saturation):
        panels.append(([Series("req/s", *STYLE["saturation"], saturation)], "requests per second",
                       "Saturation throughput"))
    latency = [Series(p, *STYLE[p], [value(load.get((t, "rate")), f"{p}_us") for t in targets]) for p in ("p50", "p99")]
    if any(v is not None for s in latency for v in s.points):
        # Each target at the rate it could run: wrk paces a connection after its response.
        rates = "/".join(fmt(value(load.get((t, "rate")), "rps")) for t in targets)
        panels.append((latency, "latency (µs)", f"Latency at the paced rate ({rates} req/s)"))
    if not panels:
        return None
    left, width, height, block = 80, 320, 240, 410
    svg = Svg(block * len(panels) + 10, 360)
    title = "Direct vs nginx vs Portcullis"
    svg.text(svg.width / 2, 28, title, anchor="middle", size=16, weight="bold")
    for i, (bar_series, y_label, subtitle) in enumerate(panels):
        draw_bars(svg, (left + i * block, 80, width, height), targets, bar_series, y_label, subtitle)
    return svg.render(title)


# --- main ------------------------------------------------------------------------------------

def main(argv):
    if len(argv) != 3:
        sys.exit("usage: report.py RESULTS.jsonl OUTDIR")
    records = read_records(argv[1])
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    by_kind = {}
    for r in records:
        by_kind.setdefault(r.get("kind"), []).append(r)
    load = aggregate(by_kind.get("load", []), "target", "mode")
    memory = aggregate(by_kind.get("memory", []), "what")
    scale = aggregate(by_kind.get("scale", []), "curve", "x")
    rates = [value(r, "rps") for r in by_kind.get("load", []) if r.get("mode") == "rate"]
    rates = [v for v in rates if v is not None]
    rate_rps = statistics.median(rates) if rates else None

    lines = ["# Portcullis benchmark results", "",
             f"From `{Path(argv[1]).name}`: {len(records)} record{'' if len(records) == 1 else 's'}.", ""]
    plots = {}
    if load:
        figure = side_by_side_figure(load)
        if figure:
            plots["side-by-side.svg"] = figure
        lines += side_by_side_section(load, rate_rps, figure is not None)
    lines += budget_section(load, memory, rate_rps)
    if memory:
        lines += memory_section(memory)
    for curve in CURVES:
        points = sorted((p for (c, _), p in scale.items() if c == curve), key=lambda p: value(p, "x") or 0)
        if points:
            figure = scale_figure(curve, points)
            if figure:
                plots[f"scale-{curve}.svg"] = figure
            lines += scaling_section(curve, points, figure is not None)

    text = "\n".join(lines)
    (out / "results.md").write_text(text, encoding="utf-8")
    for name, svg in plots.items():
        (out / name).write_text(svg, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv)
