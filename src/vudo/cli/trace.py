"""``vudo trace FILE --html OUT``: a message sequence diagram of a recorded session.

FILE is what ``vudo seance --trace FILE``, ``vudo run --trace FILE`` or ``Seance(trace=...)``
wrote: Chrome trace-event JSON. The page is one self-contained HTML file (no network): one lane
per Spirit (and the host), top to bottom in time, a box for each call and an arrow for each
message, labelled with its payload size. The drawing is done by the page's own script from the
events embedded in it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import click

from ._errors import UsageFailure
from ._options import Settings, common_options
from ._output import dump_json, json_errors

__all__ = ["read_trace", "render_html", "trace_command"]


def read_trace(path: Path) -> dict[str, Any]:
    """The lanes, calls and messages of a trace file (raises :class:`UsageFailure`)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageFailure(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageFailure(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") \
            from None
    except json.JSONDecodeError as exc:
        raise UsageFailure(f"{path}: not a trace (invalid JSON: {exc.msg})") from None
    events = document.get("traceEvents") if isinstance(document, dict) else document
    if not isinstance(events, list):
        raise UsageFailure(f"{path}: not a trace (no traceEvents array)")
    lanes: dict[int, str] = {}
    calls: list[dict[str, Any]] = []
    sends: dict[int, dict[str, Any]] = {}
    messages: list[dict[str, Any]] = []
    for e in events:
        if not isinstance(e, dict):
            continue
        ph, args = e.get("ph"), e.get("args") or {}
        if ph == "M" and e.get("name") == "thread_name":
            lanes[int(e.get("tid", 0))] = str(args.get("name", e.get("tid")))
        elif ph == "X" and e.get("cat") == "call":
            calls.append({"lane": args.get("spirit"), "name": e.get("name"),
                          "ts": e.get("ts", 0), "dur": e.get("dur", 0), "ok": args.get("ok")})
        elif ph == "i" and e.get("cat") == "message" and "id" in args:
            if str(e.get("name", "")).startswith("send"):
                message = {"from": args.get("from"), "to": args.get("to"),
                           "bytes": args.get("bytes", 0), "channel": args.get("channel", 0),
                           "sent": e.get("ts", 0), "received": None}
                sends[int(args["id"])] = message
                messages.append(message)
            elif int(args["id"]) in sends:
                sends[int(args["id"])]["received"] = e.get("ts", 0)
    return {"lanes": [lanes[t] for t in sorted(lanes)], "calls": calls, "messages": messages}


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vudo trace: __TITLE__</title>
<style>
body { font: 13px system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 16px; margin: 0 0 8px; }
.lane-line { stroke: #bbb; stroke-width: 1; stroke-dasharray: 4 3; }
.lane-name { font-weight: 600; text-anchor: middle; }
.call { fill: #cfe3ff; stroke: #4a7fc1; }
.call.failed { fill: #ffd6d6; stroke: #c14a4a; }
.arrow line { stroke: #2d6a2d; stroke-width: 1.5; marker-end: url(#head); }
.arrow.pending line { stroke: #b07a00; stroke-dasharray: 5 3; }
.size { font-size: 11px; fill: #2d6a2d; text-anchor: middle; }
</style></head>
<body>
<h1>__TITLE__</h1>
<p id="summary"></p>
<svg id="diagram" xmlns="http://www.w3.org/2000/svg"></svg>
<script id="trace-data" type="application/json">__DATA__</script>
<script>
(function () {
  var data = JSON.parse(document.getElementById("trace-data").textContent);
  var NS = "http://www.w3.org/2000/svg", svg = document.getElementById("diagram");
  var lanes = data.lanes, gap = 170, top = 40, x0 = 90;
  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    (parent || svg).appendChild(node);
    return node;
  }
  // Time runs downwards; events closer than a row apart are spread so every arrow shows.
  var stamps = [];
  data.calls.forEach(function (c) { stamps.push(c.ts, c.ts + c.dur); });
  data.messages.forEach(function (m) {
    stamps.push(m.sent); if (m.received !== null) stamps.push(m.received);
  });
  stamps = Array.from(new Set(stamps)).sort(function (a, b) { return a - b; });
  var row = {}; stamps.forEach(function (t, i) { row[t] = top + 30 + i * 22; });
  var height = top + 60 + stamps.length * 22;
  svg.setAttribute("width", x0 + gap * Math.max(lanes.length, 1));
  svg.setAttribute("height", height);
  var defs = el("defs", {});
  var marker = el("marker", {id: "head", markerWidth: 8, markerHeight: 8, refX: 7, refY: 4,
                             orient: "auto"}, defs);
  el("path", {d: "M0,0 L8,4 L0,8 z", fill: "#2d6a2d"}, marker);
  var lx = {};
  lanes.forEach(function (name, i) {
    var x = x0 + i * gap; lx[name] = x;
    var g = el("g", {"class": "lane", "data-name": name});
    el("line", {"class": "lane-line", x1: x, y1: top, x2: x, y2: height - 10}, g);
    var t = el("text", {"class": "lane-name", x: x, y: top - 12}, g);
    t.textContent = name;
  });
  data.calls.forEach(function (c) {
    if (!(c.lane in lx)) return;
    var y1 = row[c.ts], y2 = Math.max(row[c.ts + c.dur], y1 + 6);
    var r = el("rect", {"class": c.ok ? "call" : "call failed", x: lx[c.lane] - 7, y: y1,
                        width: 14, height: y2 - y1});
    el("title", {}, r).textContent = c.lane + "." + c.name + " (" + c.dur.toFixed(1) + " us)";
  });
  data.messages.forEach(function (m) {
    if (!(m.from in lx) || !(m.to in lx)) return;
    var y1 = row[m.sent], y2 = m.received === null ? y1 : row[m.received];
    var g = el("g", {"class": m.received === null ? "arrow pending" : "arrow",
                     "data-bytes": m.bytes});
    var x1 = lx[m.from], x2 = lx[m.to];
    if (x1 === x2) x2 += 40;
    el("line", {x1: x1, y1: y1, x2: x2, y2: y2}, g);
    var t = el("text", {"class": "size", x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4}, g);
    t.textContent = m.bytes + " B" + (m.channel ? " (ch " + m.channel + ")" : "");
  });
  document.getElementById("summary").textContent = lanes.length + " lanes, " +
    data.messages.length + " messages, " + data.calls.length + " calls";
})();
</script>
</body></html>
"""


def render_html(trace: dict[str, Any], title: str) -> str:
    """The self-contained page for a trace read by :func:`read_trace`."""
    data = json.dumps(trace).replace("</", "<\\/")  # never close the <script> early
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)


@click.command("trace", short_help="Render a recorded session as an HTML sequence diagram.")
@click.argument("trace_file", metavar="FILE", type=click.Path(path_type=Path))
@click.option("--html", "html_out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="OUT", help="Write the page to OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
@common_options
@click.pass_context
def trace_command(ctx: click.Context, trace_file: Path, html_out: Path, as_json: bool) -> None:
    """Render FILE (from vudo seance/run --trace FILE) as a message sequence diagram.

    The page has one lane per Spirit, a box per call and an arrow per message labelled with
    its payload size; it needs no network. FILE itself opens in Perfetto (ui.perfetto.dev) or
    chrome://tracing for a timeline.

    \b
      vudo seance example:pingpong --trace session.json
      vudo trace session.json --html session.html

    Exit codes: 0 written; 2 usage error (missing or invalid FILE, OUT not writable).
    """
    ctx.ensure_object(Settings)
    with json_errors(as_json, "trace"):
        trace = read_trace(trace_file)
        try:
            html_out.parent.mkdir(parents=True, exist_ok=True)
            html_out.write_text(render_html(trace, trace_file.name), encoding="utf-8")
        except OSError as exc:
            raise UsageFailure(f"cannot write {html_out}: {exc.strerror or exc}") from None
    summary = {"lanes": len(trace["lanes"]), "messages": len(trace["messages"]),
               "calls": len(trace["calls"])}
    if as_json:
        click.echo(dump_json({"command": "trace", "ok": True, "file": str(trace_file),
                              "html": str(html_out), **summary, "error": None}))
    else:
        click.echo(f"wrote {html_out} ({summary['lanes']} lanes, {summary['messages']} messages, "
                   f"{summary['calls']} calls)", err=True)
