"""Fleet load (loopback only): N simulated gateways speaking topic contract v1 and one DCC
User on the project's broker (TLS, client certificates, per-gateway rights), for N = 10,
100, 500, 1000, 2000 while each engine's time budget lasts: mosquitto (rows `fleet N=...`),
then RabbitMQ (rows `fleet rabbitmq N=...`, when rabbitmq-server is installed)
(host_tools/fleet_load.py, docs/emulate.md "Fleet").

Rows per N: commands/s through the broker (each command: DCC User PUBLISH -> broker ->
gateway, `accepted` and `response` back through the broker; 200 in flight), latency
p50/p95 from the command's PUBLISH to its `response` status with the commands paced at
RATE commands/s (below the throughput: the latency of a fleet that is not saturated),
broker RSS with N gateways connected, and the time to connect them (TLS with client
certificates). The broker is started afresh for
each N, so its RSS is that N's alone. The simulated gateways and the DCC User share one
Python process beside the broker on the same machine: at the larger N that process, not
mosquitto, is the likely bound.
"""
import asyncio
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from host_tools import fleet_load as F  # noqa: E402

SIZES = (10, 100, 500, 1000, 2000)
# per engine, certificates included; RabbitMQ's node takes 2-7 s to boot for each N
BUDGET_S = {"mosquitto": 60.0, "rabbitmq": 90.0}
WINDOW = 200             # commands in flight from the DCC User (throughput load)
RATE = 500               # commands/s of the latency load
PACED = 1000             # commands of the latency load


def commands_for(n):
    return max(2000, 2 * n)


def rows_for(r, engine="mosquitto"):
    n = r["gateways"]
    label = "fleet N=%d" % n if engine == "mosquitto" else "fleet %s N=%d" % (engine, n)
    lat = r["latency_ms"]
    rss = r["broker_rss_bytes"]
    share = r["broker_cpu_share"]
    note = "%d commands, %d in flight, %d lost (both loads); %s busy %s of one core meanwhile" % (
        r["commands"] - r["paced"], WINDOW, r["lost"], engine, "?" if share is None else "%d%%" % round(100 * share))
    return [
        {"name": label + " commands/s", "value": round(r["commands_per_s"] or 0, 1), "unit": "cmd/s",
         "note": note},
        {"name": label + " latency p50", "value": round(lat["p50"], 2) if lat["p50"] is not None else None,
         "unit": "ms", "note": "DCC PUBLISH -> `response` status back, %d commands at %d /s" % (r["paced"], r["rate"])},
        {"name": label + " latency p95", "value": round(lat["p95"], 2) if lat["p95"] is not None else None,
         "unit": "ms"},
        {"name": label + " broker RSS", "value": rss["connected"], "unit": "bytes",
         "note": engine + " with N gateways + 1 DCC User connected (idle: %s, after the load: %s)"
                 % (rss["idle"], rss["loaded"])},
        {"name": label + " connect time", "value": round(r["connect_s"], 2), "unit": "s",
         "note": "N TLS connections with client certificates, 32 at a time"},
    ]


def run_engine(engine, tmp):
    t0 = time.monotonic()
    budget = BUDGET_S[engine]
    rows = []
    fb = F.FleetBroker(os.path.join(tmp, engine), max(SIZES), engine=engine)
    fb.broker.prepare()      # certificates for every size, once
    for n in SIZES:
        left = budget - (time.monotonic() - t0)
        if left < 5:
            rows.append({"name": "fleet %sN=%d" % ("" if engine == "mosquitto" else engine + " ", n),
                         "value": None, "unit": "", "note": "skipped: the %d s budget was spent" % budget})
            continue
        fb.start()
        try:
            r = asyncio.run(F.run_fleet(fb, n, commands_for(n), window=WINDOW, rate=RATE, paced=PACED,
                                        timeout_s=min(left, 30.0)))
        finally:
            fb.stop()
        rows += rows_for(r, engine)
    return rows


def run():
    from host_tools import broker_rabbitmq
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        rows += run_engine("mosquitto", tmp)
        if broker_rabbitmq.available():
            rows += run_engine("rabbitmq", tmp)
        else:
            rows.append({"name": "fleet rabbitmq", "value": None, "unit": "",
                         "note": "skipped: rabbitmq-server is not installed (apt-get install rabbitmq-server)"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
