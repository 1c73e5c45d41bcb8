"""End-to-end benchmarks on the emulated board (host_tools.emulate: mosquitto + the deployed
firmware under MicroPython + the NCP/CH emulator, Zigbee UART paced at 115200 baud by the
emulator):

- latency of 1 KB commands, one at a time (publish -> response on the rsp topic), p50/p95,
  against the wire-time lower bound of the same GBCS bytes (command + response) at 115200
  baud, 10 bits a byte; the gateway overhead is what is left over;
- throughput: small corpus commands to the ESME and the GSME, end to end;
- peak heap during a 4 KB command (GBT blocks) on the emulated board's default heap;
- flash bytes the journal writes per command (wear), from the board's `PPMID flash:` lines.
"""
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from host_tools import emulate as E  # noqa: E402
from host_tools import mpcompat  # noqa: E402

mpcompat.install()
from ppmid.gbcs import build, decode  # noqa: E402

BAUD = 115200
FLASH_RE = re.compile(rb"PPMID flash: journal_written=(\d+) appends=(\d+) syncs=(\d+)")


def wire_ms(nbytes):
    return nbytes * 10.0 * 1000 / BAUD


def sized(size, counter, ref):
    m = decode(ref)
    fill = size - 64
    for _ in range(20):
        buf = build.build_command(counter, bytes(m.originator), bytes(m.recipient), m.message_code,
                                  bytes((i * 31 + 7) & 0xFF for i in range(fill)))
        if len(buf) == size:
            return buf
        fill += size - len(buf)
    return buf


def pct(vals, p):
    s = sorted(vals)
    return s[max(0, -(-len(s) * p // 100) - 1)]


def flash_figures(emu, since):
    ms = list(FLASH_RE.finditer(emu.board.console_bytes()[since:]))
    return (int(ms[-1].group(1)), int(ms[-1].group(3))) if ms else (None, None)


def wait_flash_line(emu, since, timeout=8):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        got = flash_figures(emu, since)
        if got[0] is not None and got == last:
            return got
        last = got
        time.sleep(2.5)
    return flash_figures(emu, since)


def run():
    tmp = tempfile.mkdtemp(prefix="bench-e2e-")
    out = []
    cfg = {"limits": {"rate_per_s": 1000, "burst": 1000, "queue": 40, "response_timeout_s": 15}}
    try:
        with E.Emulation(os.path.join(tmp, "emu"), overrides=cfg, log=None) as emu:
            base = E.renumbered_commands(1)[0][1]
            c0 = decode(base).counter + 100

            # 1. latency of 1 KB commands, one at a time
            lat, wire = [], []
            for i in range(15):
                buf = sized(1024, c0 + i, base)
                before = len(emu.ncp.sent)
                rep = emu.replay([{"at_ms": 0, "id": "lat%d" % i, "gbcs": buf, "via": "mqtt"}], settle_s=20)
                if rep["responses"] != 1:
                    continue
                rsp = emu.ncp.sent[before:]
                lat.append(rep["per_id"]["lat%d" % i]["latency_ms"])
                wire.append(wire_ms(len(buf) + sum(len(r) for r in rsp)))
            c0 += 100
            if lat:
                p50, p95, w = pct(lat, 50), pct(lat, 95), pct(wire, 50)
                over = 100.0 * (p50 - w) / w
                out += [
                    {"name": "e2e latency 1 KB command p50", "value": p50, "unit": "ms",
                     "note": "publish -> response, one at a time, n=%d; UART wire bound %.0f ms" % (len(lat), w)},
                    {"name": "e2e latency 1 KB command p95", "value": p95, "unit": "ms"},
                    {"name": "gateway overhead over wire time, 1 KB command (p50)", "value": round(over, 1), "unit": "%",
                     "goal": "< 10", "ok": over < 10,
                     "note": "wire = (command + response GBCS bytes) x 10 bits / 115200; the overhead is ASH/EZSP "
                             "framing, 82-byte APS fragments each confirmed by the NCP, MQTT + TLS, flash syncs; "
                             "the board->NCP direction is not paced by the emulator (real UART: slower)"}]
            else:
                out.append({"name": "e2e latency 1 KB command p50", "value": None, "unit": "ms", "ok": False,
                            "note": "no response came back"})

            # 2. throughput: 40 small commands at once, to ESME and GSME
            small = [x for x in E.renumbered_commands(400) if len(x[1]) <= 200][:40]
            lines = E.lines_from(small, interval_ms=0, prefix="tp")
            t0 = time.time()
            rep = emu.replay(lines, settle_s=30)
            done = rep["responses"]
            # the last response's latency is the span from the (near simultaneous) publishes
            span = max([v.get("latency_ms", 0) for v in rep["per_id"].values()] or [0]) / 1000.0
            tput = done / span if span else 0
            out.append({"name": "e2e throughput (small commands, ESME+GSME)", "value": round(tput, 1),
                        "unit": "cmd/s", "goal": ">= 20", "ok": tput >= 20,
                        "note": "%d of %d answered in %.1f s (one in flight per meter; mean GBCS %d B); wall %.1f s"
                                % (done, len(lines), span, sum(len(b) for _, b in small) // max(1, len(small)),
                                   time.time() - t0)})

            # 3. wear: journal bytes per command (from the board's flash lines)
            mark = emu.board.mark()
            w0 = wait_flash_line(emu, 0)
            n = 20
            rep = emu.replay(E.lines_from(E.renumbered_commands(n), interval_ms=100, prefix="wear"), settle_s=30)
            w1 = wait_flash_line(emu, mark)
            if w0[0] is not None and w1[0] is not None and rep["responses"]:
                per = (w1[0] - w0[0]) / float(n)
                syncs = (w1[1] - w0[1]) / float(n)
                out.append({"name": "e2e journal bytes written per command (wear)", "value": round(per), "unit": "B",
                            "note": "%.1f synced records per command (LittleFS rewrites the file's tail block "
                                    "at each sync: ~%.0f KB of flash programmed per command)" % (syncs, syncs * 4)})

            # 4. peak heap during a 4 KB command on the default heap
            before = emu.heap_figures()
            mark = emu.board.mark()
            emu.console_start = mark
            # a fresh counter (above every one used so far for this originator/meter pair)
            fresh = E.renumbered_commands(1)[0][1]
            big = sized(4096, decode(fresh).counter + 1, fresh)
            rep = emu.replay([{"at_ms": 0, "id": "big4k", "gbcs": big, "via": "mqtt"}], settle_s=20)
            time.sleep(1.0)
            h = emu.heap_figures()
            text = emu.board.console_text()
            mem_err = "MemoryError" in text
            free_min = h["free_min"] if h["free_min"] is not None else before["free_min"]
            pct_free = 100.0 * free_min / h["heap_bytes"]
            out.append({"name": "peak heap during a 4 KB command (GBT), free at the peak", "value": round(pct_free, 1),
                        "unit": "%", "goal": ">= 25, no MemoryError", "ok": pct_free >= 25 and not mem_err and
                        rep["responses"] == 1,
                        "note": "min free %d of %d bytes (emulated heap, 64-bit objects; sampled every 250 ms after "
                                "a collect); response %s; MemoryError %s"
                                % (free_min, h["heap_bytes"], "back" if rep["responses"] == 1 else "MISSING", mem_err)})
            boot = re.findall(rb"PPMID ready: version=\S+ board=\S+ free_heap=(\d+)", emu.board.console_bytes())
            if boot:
                out.append({"name": "free heap after the gateway is up", "value": int(boot[-1]), "unit": "B",
                            "note": "of %d (banner, after gc.collect; before the TLS session)" % h["heap_bytes"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
