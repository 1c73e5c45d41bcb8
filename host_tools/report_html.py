"""A replay report (host_tools.replay / emulate, docs/trace.md) as one self-contained HTML
file: the figures of the JSON report, and plots drawn with matplotlib (Agg backend, no
display) embedded as base64 PNG, so the file can be mailed or attached to a ticket.

Plots: latency per command over the run with the faults marked (board kills, broker
restarts, Wi-Fi drops: a dashed line where each began, the time it lasted shaded) and the
commands without a response at the bottom;
a latency histogram; the final statuses per road (mqtt, nfc-phone, nfc-tag).
Times are seconds from the start of the replay (a fault's times are taken from the chaos
thread's start, a few ms before the first command).
"""
import base64
import html
import io
import json

FAULT_STYLE = {"kill": ("board kill", "tab:red"), "broker": ("broker restart", "tab:purple"),
               "wifi": ("Wi-Fi drop", "tab:orange")}
STATUS_COLOURS = {"response": "tab:green", "timeout": "tab:orange", "rejected": "tab:gray",
                  "failed": "tab:red", "lost": "black"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display: a CI machine or an SSH session
    import matplotlib.pyplot as plt
    return plt


def _commands(rep):
    """[(id, via, sent_s, final status, latency ms or None)] in sending order."""
    out = []
    for id, e in (rep.get("per_id") or {}).items():
        final = (e.get("final") or {}).get("status", "lost")
        out.append((id, e.get("via", "mqtt"), e.get("sent_s"), final, e.get("latency_ms")))
    out.sort(key=lambda x: (x[2] is None, x[2] or 0.0, x[0]))
    return out


def faults(rep):
    """[(began_s, over_s, kind)] of the faults the run injected (emulate's chaos), in time
    order. A report without spans (older) gives each fault as an instant when it was over."""
    chaos = rep.get("chaos") or {}
    if chaos.get("spans") is not None:
        return sorted((float(b), float(e), what) for b, e, what in chaos["spans"])
    return sorted((float(t), float(t), what) for t, what in chaos.get("done") or [])


def latency_figure(rep):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    cmds = [c for c in _commands(rep) if c[2] is not None]
    ok = [c for c in cmds if c[4] is not None]
    ax.plot([c[2] for c in ok], [c[4] for c in ok], "o", ms=4, color="tab:green", label="response")
    top = max([c[4] for c in ok] + [1])
    for status in ("timeout", "rejected", "failed", "lost"):
        xs = [c[2] for c in cmds if c[3] == status]
        if xs:
            ax.plot(xs, [0] * len(xs), "x", ms=6, color=STATUS_COLOURS[status], label="%s (no latency)" % status)
    seen = set()
    for began, over, what in faults(rep):
        name, colour = FAULT_STYLE.get(what, (what, "tab:blue"))
        # a dashed line where the fault began, the time it lasted shaded
        ax.axvline(began, color=colour, ls="--", lw=1.2, label=None if what in seen else name)
        if over > began:
            ax.axvspan(began, over, color=colour, alpha=0.12, lw=0)
        seen.add(what)
    ax.set_xlabel("seconds from the start of the replay")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=-0.04 * top)
    ax.set_title("Latency per command (command published -> response received)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def histogram_figure(rep):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    lat = [c[4] for c in _commands(rep) if c[4] is not None]
    if lat:
        ax.hist(lat, bins=min(30, max(5, len(lat) // 2)), color="tab:green", edgecolor="white")
        lm = rep.get("latency_ms") or {}
        for key, ls in (("p50", "-"), ("p95", "--")):
            if lm.get(key) is not None:
                ax.axvline(lm[key], color="black", ls=ls, lw=1, label="%s %s ms" % (key, lm[key]))
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no response: no latency", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("commands")
    ax.set_title("Latency histogram")
    fig.tight_layout()
    return fig


def roads_figure(rep):
    plt = _pyplot()
    roads = rep.get("roads") or {}
    names = sorted(roads)
    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.6 * max(1, len(names))))
    left = [0] * len(names)
    statuses = sorted({s for r in roads.values() for s in r["final"]},
                      key=lambda s: list(STATUS_COLOURS).index(s) if s in STATUS_COLOURS else 99)
    for s in statuses:
        counts = [roads[n]["final"].get(s, 0) for n in names]
        ax.barh(names, counts, left=left, color=STATUS_COLOURS.get(s, "tab:blue"), label=s)
        left = [a + b for a, b in zip(left, counts)]
    ax.set_xlabel("commands")
    ax.set_title("Final status per road")
    if statuses:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _png(fig):
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _rows(rep):
    lm = rep.get("latency_ms") or {}
    rows = [("gateway", rep.get("gateway")), ("trace", rep.get("trace")), ("duration (s)", rep.get("duration_s")),
            ("commands", rep.get("commands")), ("responses", rep.get("responses")), ("late", rep.get("late")),
            ("timeouts", rep.get("timeouts")), ("lost", rep.get("lost_count"))]
    rows += [("rejected " + k, v) for k, v in sorted((rep.get("rejected") or {}).items())]
    rows += [("failed " + k, v) for k, v in sorted((rep.get("failed") or {}).items())]
    rows += [("latency ms p50 / p95 / max", "%s / %s / %s (n=%s)" % (lm.get("p50"), lm.get("p95"), lm.get("max"),
                                                                      lm.get("n"))),
             ("expectation mismatches", len(rep.get("mismatches") or [])), ("alerts", rep.get("alerts"))]
    for key, name in (("delivered_to_ch", "delivered to CH"), ("duplicates_to_ch", "duplicates to CH"),
                      ("board_restarts", "board restarts"), ("peak_heap", "peak heap used (bytes)")):
        if key in rep:
            rows.append((name, rep[key]))
    return rows


def render(rep, title="PPMID replay report"):
    """The HTML text for report dict `rep`."""
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>%s</title>" % e(title),
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.15em .5em;"
             "text-align:left;font-size:90%}img{display:block;margin:.8em 0;max-width:100%}</style>",
             "</head><body>", "<h1>%s</h1>" % e(title), "<h2>Figures</h2>", "<table>"]
    parts += ["<tr><th>%s</th><td>%s</td></tr>" % (e(str(k)), e(str(v))) for k, v in _rows(rep)]
    parts.append("</table>")
    fl = faults(rep)
    if fl or rep.get("chaos"):
        parts += ["<h2>Faults</h2>", "<table><tr><th>began (s)</th><th>over (s)</th><th>fault</th></tr>"]
        parts += ["<tr><td>%s</td><td>%s</td><td>%s</td></tr>" % (b, o, e(FAULT_STYLE.get(w, (w,))[0]))
                  for b, o, w in fl]
        parts.append("</table>")
        for err in (rep.get("chaos") or {}).get("errors") or []:
            parts.append("<p>fault error: %s</p>" % e(err))
    parts += ["<h2>Plots</h2>"]
    for name, fig in (("latency over time", latency_figure(rep)), ("latency histogram", histogram_figure(rep)),
                      ("statuses per road", roads_figure(rep))):
        parts.append("<img alt='%s' src='data:image/png;base64,%s'>" % (e(name), _png(fig)))
    parts += ["<h2>Commands</h2>", "<table><tr><th>id</th><th>road</th><th>sent (s)</th><th>final</th>"
              "<th>latency (ms)</th><th>statuses</th></tr>"]
    per_id = rep.get("per_id") or {}
    for id, via, sent, final, lat in _commands(rep):
        parts.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            e(id), e(via), "" if sent is None else sent, e(final), "" if lat is None else lat,
            e(", ".join(str(s) for s in per_id[id].get("statuses", [])))))
    parts += ["</table>", "<h2>The JSON report</h2>",
              "<pre>%s</pre>" % e(json.dumps(rep, indent=1, sort_keys=True)), "</body></html>"]
    return "\n".join(parts) + "\n"


def write(rep, path, title="PPMID replay report"):
    text = render(rep, title)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
