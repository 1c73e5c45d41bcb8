"""The HTML replay report (host_tools.report_html): one self-contained file whose tables
hold the JSON report's numbers, three PNG plots embedded, the faults drawn where they fell."""
import base64
import html
import re

import matplotlib  # noqa: F401  (a dependency of ppmid: --html draws with it; missing, this fails)

from host_tools import report_html


def synthetic_report():
    per_id = {}
    for i in range(12):
        per_id["c%d" % i] = {"via": "mqtt", "sent_s": 0.5 * i, "statuses": ["accepted", "relayed", "response"],
                             "final": {"status": "response"}, "latency_ms": 200 + 37 * i}
    per_id["t1"] = {"via": "nfc-tag", "sent_s": 6.1, "statuses": ["accepted", "relayed", "timeout"],
                    "final": {"status": "timeout"}}
    per_id["p1"] = {"via": "nfc-phone", "sent_s": 6.3, "statuses": ["rejected"],
                    "final": {"status": "rejected", "error": "E_REPLAY"}}
    per_id["l1"] = {"via": "mqtt", "sent_s": 6.5, "statuses": [], "final": None}
    return {"version": 1, "gateway": "00DB1234567890A4", "duration_s": 30.2, "commands": 15, "responses": 12,
            "late": 0, "timeouts": 1, "lost": ["l1"], "lost_count": 1, "rejected": {"E_REPLAY": 1}, "failed": {},
            "latency_ms": {"n": 12, "p50": 385, "p95": 607, "max": 607}, "mismatches": [], "skipped": [],
            "alerts": 2, "per_id": per_id,
            "roads": {"mqtt": {"commands": 13, "final": {"response": 12, "lost": 1}},
                      "nfc-tag": {"commands": 1, "final": {"timeout": 1}},
                      "nfc-phone": {"commands": 1, "final": {"rejected": 1}}},
            "delivered_to_ch": 13, "duplicates_to_ch": 0, "board_restarts": 1, "peak_heap": 123456,
            "chaos": {"done": [[1.7, "kill"], [4.25, "broker"], [6.9, "wifi"]],
                      "spans": [[1.7, 1.7, "kill"], [3.25, 4.25, "broker"], [4.9, 6.9, "wifi"]],
                      "errors": [], "uart_error_rate": 0}}


def table_cells(text, heading):
    """The rows of the table after <h2>heading</h2>, as lists of unescaped cell texts."""
    part = text.split("<h2>%s</h2>" % heading, 1)[1].split("</table>", 1)[0]
    return [[html.unescape(c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", part)]


def check_html_holds(text, rep):
    figures = dict(table_cells(text, "Figures"))
    for key, name in (("commands", "commands"), ("responses", "responses"), ("timeouts", "timeouts"),
                      ("lost_count", "lost"), ("alerts", "alerts")):
        assert figures[name] == str(rep[key]), name
    lm = rep["latency_ms"]
    assert figures["latency ms p50 / p95 / max"] == "%s / %s / %s (n=%s)" % (lm["p50"], lm["p95"], lm["max"], lm["n"])
    for code, n in rep["rejected"].items():
        assert figures["rejected " + code] == str(n)
    rows = {r[0]: r for r in table_cells(text, "Commands")[1:]}
    assert set(rows) == set(rep["per_id"])
    for id, e in rep["per_id"].items():
        assert rows[id][1] == e.get("via", "mqtt")
        assert rows[id][3] == ((e.get("final") or {}).get("status") or "lost")
        assert rows[id][4] == ("" if e.get("latency_ms") is None else str(e["latency_ms"]))
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == 3
    for b64 in images:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert "http://" not in text.split("<h2>The JSON report</h2>")[0]  # self-contained: nothing fetched
    return figures


def test_the_html_holds_the_report_and_three_plots(tmp_path):
    rep = synthetic_report()
    path = report_html.write(rep, str(tmp_path / "r.html"))
    text = open(path, encoding="utf-8").read()
    check_html_holds(text, rep)
    assert table_cells(text, "Faults")[1:] == [["1.7", "1.7", "board kill"], ["3.25", "4.25", "broker restart"],
                                                ["4.9", "6.9", "Wi-Fi drop"]]


def test_faults_are_vertical_lines_where_they_fell_and_commands_where_sent():
    rep = synthetic_report()
    fig = report_html.latency_figure(rep)
    ax = fig.axes[0]
    vlines = sorted(l.get_xdata()[0] for l in ax.get_lines() if len(l.get_xdata()) == 2
                    and l.get_xdata()[0] == l.get_xdata()[1] and l.get_linestyle() == "--")
    assert vlines == [1.7, 3.25, 4.9]  # where each began
    spans = sorted((p.get_x(), round(p.get_x() + p.get_width(), 6)) for p in ax.patches)
    assert spans == [(3.25, 4.25), (4.9, 6.9)]  # a kill is an instant: no span
    labels = ax.get_legend_handles_labels()[1]
    assert {"board kill", "broker restart", "Wi-Fi drop", "response", "timeout (no latency)",
            "rejected (no latency)", "lost (no latency)"} <= set(labels)
    points = [l for l in ax.get_lines() if l.get_label() == "response"][0]
    assert list(points.get_xdata()) == [0.5 * i for i in range(12)]
    assert list(points.get_ydata()) == [200 + 37 * i for i in range(12)]
    roads = report_html.roads_figure(rep).axes[0]
    widths = sorted(p.get_width() for p in roads.patches)
    assert sum(widths) == rep["commands"] and max(widths) == 12


def test_an_older_report_without_spans_marks_faults_when_they_were_over():
    rep = synthetic_report()
    del rep["chaos"]["spans"]
    assert report_html.faults(rep) == [(1.7, 1.7, "kill"), (4.25, 4.25, "broker"), (6.9, 6.9, "wifi")]


def test_a_report_without_responses_or_roads_still_renders(tmp_path):
    rep = {"gateway": "00DB1234567890A4", "commands": 0, "responses": 0, "latency_ms": {"n": 0}, "per_id": {}}
    text = report_html.render(rep)
    assert text.count("data:image/png;base64,") == 3 and "<h2>Faults</h2>" not in text
