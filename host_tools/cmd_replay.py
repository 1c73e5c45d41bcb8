"""`ppmid replay TRACE --gateway EUI --report OUT.json (--state-dir DIR | --broker URL --ca --cert --key)`

Replays a command trace (docs/trace.md) through MQTT against any gateway, as a DCC User;
writes a JSON report and prints a table. Build a sample trace from the corpus with
`python -m host_tools.trace --out sample.jsonl`.

`ppmid replay TRACE --serial PORT --report OUT.json` replays it by wire instead (every
line, whatever its via; docs/wired.md): no broker, and no key when the trace was signed
elsewhere (`ppmid sign --trace`). The report adds each response's GBCS bytes, to upload
once back online. With a broker as well (--broker, or a --state-dir holding one), the
lines with "via": "serial" go by wire and the others over MQTT, in one run.
"""
import json
import os
import sys

from host_tools.cli import CliError, check_output_file


def add_arguments(p):
    p.add_argument("trace", help="trace file (JSON lines, format v1)")
    p.add_argument("--gateway", metavar="EUI", help="the gateway's EUI-64 (16 hex digits); by wire: checked if given")
    p.add_argument("--serial", metavar="PORT", help="replay by wire on this serial port, not MQTT")
    p.add_argument("--baud", type=int, default=115200, help="the wired UART's baud rate (default 115200)")
    p.add_argument("--report", required=True, metavar="OUT.json", help="where to write the report")
    p.add_argument("--broker", metavar="URL", help="mqtts://host:port (default: from --state-dir)")
    p.add_argument("--state-dir", help="broker state dir (ppmid broker start): address and dcc-user certificate")
    p.add_argument("--user", default="test", help="DCC User identity in --state-dir (default: test)")
    p.add_argument("--ca", help="CA certificate (PEM)")
    p.add_argument("--cert", help="DCC User client certificate (PEM)")
    p.add_argument("--key", help="its private key (PEM)")
    p.add_argument("--envelope-key", metavar="FILE",
                   help="the gateway's envelope key (32 raw bytes; default: STATE_DIR/keys/EUI.key)")
    p.add_argument("--speed", type=float, default=1.0, help="time scale: 2 = twice as fast (default 1)")
    p.add_argument("--settle-s", type=float, default=40.0,
                   help="after the last command, wait this long for final statuses (default 40)")
    p.add_argument("--pcap", metavar="FILE",
                   help="capture the gateway's MQTT traffic during the run as pcapng (needs --state-dir: "
                        "its monitor identity reads the cmd topic too; docs/captures.md)")
    p.add_argument("--pn532", metavar="ENDPOINT",
                   help="carry the trace's nfc-phone/nfc-tag lines through a PN532 emulator on the host end of "
                        "the board's NFC UART: a pty or serial device, or an emulated board's state dir")
    p.add_argument("--html", metavar="OUT.html",
                   help="also write the report as one HTML file with plots (latency, statuses per road)")
    p.add_argument("--client-id", metavar="ID",
                   help="MQTT client id of the persistent session (default IDENTITY/replay-EUI, "
                        "IDENTITY the certificate's; two replays to one gateway at once need two; "
                        "the mosquitto `ppmid broker` starts uses the identity instead: there use "
                        "--user; its RabbitMQ refuses an id other than IDENTITY or IDENTITY/...)")


def check_run_options(speed, settle_s, report):
    """Refuse what would fail only after the whole replay ran (also for emulate): a speed
    or settle time that is not a sensible number, a report path that cannot be written."""
    if not 0.01 <= speed <= 1000:  # also nan
        raise CliError("--speed must be from 0.01 to 1000 (2 = twice as fast)")
    if settle_s is not None and not 0 <= settle_s <= 86400:
        raise CliError("--settle-s must be from 0 to 86400 seconds")
    if os.path.isdir(report):
        raise CliError("--report %s is a directory; give a file name" % report)
    parent = os.path.dirname(os.path.abspath(report))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise CliError("cannot create the report's folder %s: %s" % (parent, exc.strerror))
    if not os.access(parent, os.W_OK):
        raise CliError("cannot write the report in %s" % parent)


def load_trace(path):
    """A trace file's lines, or CliError naming the file and the problem (also for emulate)."""
    from host_tools import trace as tr
    try:
        lines = tr.load(path)
    except OSError as exc:
        raise CliError("cannot read %s: %s" % (path, exc.strerror))
    except tr.TraceError as exc:
        raise CliError("%s: %s" % (path, exc))
    if not lines:
        raise CliError("%s holds no commands" % path)
    return lines


def _write_report(rep, args):
    from host_tools.replay import table
    rep["trace"] = os.path.abspath(args.trace)
    with open(args.report, "w") as f:
        json.dump(rep, f, indent=1, sort_keys=True)
    print(table(rep))
    print("report: %s" % args.report)
    if getattr(args, "html", None) is not None:
        from host_tools import report_html
        report_html.write(rep, args.html, "PPMID replay report")
        print("html report: %s" % args.html)
    if rep["lost_count"]:
        print("ppmid: %d command(s) lost: no final status" % rep["lost_count"], file=sys.stderr)
        return 1
    return 0


def run_serial(args, eui):
    from host_tools.wired import WiredClient, WiredError, WiredReplayer
    check_run_options(args.speed, args.settle_s, args.report)
    lines = load_trace(args.trace)
    key = None
    if any(x.get("envelope") is None for x in lines):
        kpath = args.envelope_key
        if kpath is None and args.state_dir and eui:
            kpath = os.path.join(args.state_dir, "keys", eui + ".key")
        if kpath is None:
            raise CliError("lines without a signed envelope need --envelope-key FILE (or sign the trace "
                           "elsewhere: ppmid sign --trace)")
        from host_tools.keys import read_envelope_key
        key = read_envelope_key(kpath)
    c = WiredClient(args.serial, args.baud)
    try:
        c.open()
        # HELLO naming the trace's ids, not none (none asks for every result the gateway
        # keeps, other runs' too): results of an earlier run of this trace come back now
        hello = c.say_hello([x["id"] for x in lines])
        gw = (hello.get("gateway") or "").upper()
        if eui and gw and gw != eui:
            raise CliError("the gateway on %s is %s, not --gateway %s" % (args.serial, gw, eui))
        wr = WiredReplayer(c, eui or gw, key, speed=args.speed, settle_s=args.settle_s)
        rep = wr.run(lines)
    except WiredError as exc:
        raise CliError(str(exc))
    finally:
        c.close()
    return _write_report(rep, args)


def _start_capture(state_dir, eui, path):
    from host_tools import captures, pcap
    writer = pcap.PcapWriter(path)
    try:
        return writer, captures.BrokerCapture(state_dir, eui, writer).start()
    except captures.CaptureError as exc:
        writer.close()
        raise CliError(str(exc))


def run(args):
    from host_tools.replay import Replayer, ReplayError, identity_from_state_dir, parse_broker_url
    eui = (args.gateway or "").upper()
    if (eui or not args.serial) and (len(eui) != 16 or any(c not in "0123456789ABCDEF" for c in eui)):
        raise CliError("--gateway must be 16 hex digits")
    mixed = args.serial and (args.broker or (args.state_dir and os.path.exists(
        os.path.join(args.state_dir, "broker.json"))))
    if args.serial and not mixed:
        return run_serial(args, eui)
    if mixed and not eui:
        raise CliError("--gateway EUI is needed with a broker")
    check_run_options(args.speed, args.settle_s, args.report)
    lines = load_trace(args.trace)
    if args.pcap is not None:
        if not args.state_dir:
            raise CliError("--pcap needs --state-dir (a ppmid broker state dir: the capture reads as its monitor)")
        check_output_file("--pcap", args.pcap)
    check_output_file("--html", args.html)
    capture = road = None
    try:
        host = port = ca = cert = key = None
        if args.state_dir:
            host, port, ca, cert, key = identity_from_state_dir(args.state_dir, args.user)
        if args.broker:
            host, port = parse_broker_url(args.broker)
        ca, cert, key = args.ca or ca, args.cert or cert, args.key or key
        if host is None:
            raise CliError("say where the broker is: --broker URL or --state-dir DIR")
        if not (ca and cert and key):
            raise CliError("TLS identity needed: --ca/--cert/--key or --state-dir DIR")
        kpath = args.envelope_key
        kid = None
        if kpath is None and args.state_dir:
            kpath = os.path.join(args.state_dir, "keys", eui + ".key")
            from host_tools import mqtt_tools as mt
            name = args.user[9:] if args.user.startswith("dcc-user-") else args.user
            own = mt.user_key_path(args.state_dir, eui, name)
            if os.path.exists(own):  # the DCC User's own key for this gateway, named in each envelope
                kpath, kid = own, name
        if kpath is None:
            raise CliError("--envelope-key FILE is needed to sign the commands")
        from host_tools.keys import read_envelope_key
        envelope_key = read_envelope_key(kpath)
        r = Replayer(host, port, eui, envelope_key, ca, cert, key, speed=args.speed, settle_s=args.settle_s,
                     client_id=args.client_id)
        r.kid = kid
        wired = None
        if mixed:
            # lines with via serial by wire, the others over MQTT; all statuses on rsp
            from host_tools.wired import WiredClient, WiredError, WiredReplayer
            try:
                wired = WiredClient(args.serial, args.baud).open()
            except WiredError as exc:
                raise CliError(str(exc))
            wr = WiredReplayer(wired, eui, envelope_key)
            r.serial = wr.send_line
        if args.pcap is not None:
            capture = _start_capture(args.state_dir, eui, args.pcap)
        reader = road = None
        if args.pn532 is not None:
            from host_tools import nfc_road
            try:
                reader = nfc_road.open_reader(args.pn532)
            except nfc_road.NfcRoadError as exc:
                raise CliError(str(exc), exc.code)
            road = r.nfc = nfc_road.NfcRoad(reader, r.note, phone_wait_s=args.settle_s + 10)
        from host_tools.progress import Progress
        bar = Progress("replay", len(lines))
        r.progress = lambda n, total: bar.update(n)
        try:
            rep = r.run(lines)
            if wired is not None:
                # the wire's result follows the MQTT one within the road's poll period
                wired.wait_results([i for i in wr.sent if (rep["per_id"].get(i, {}).get("final") or {})
                                    .get("status") in ("response", "failed")], 5.0)
        finally:
            bar.close()
            if road is not None:
                road.stop()
                reader.stop()
            r.close()
            if wired is not None:
                wired.close()
        if wired is not None:
            rep["wired"] = dict(wired.stats, port=wired.port, channel_errors=len(wired.channel_errors),
                                results={i: m.get("status") for i, m in wired.results.items()})
    except ReplayError as exc:
        raise CliError(str(exc))
    finally:
        if capture is not None:
            capture[1].stop()
            capture[0].close()
            print("capture: %d packets in %s" % (capture[0].count, args.pcap))
    if road is not None:
        rep["nfc"] = road.report()
    return _write_report(rep, args)
