"""`ppmid capture`: one gateway's MQTT traffic (commands, statuses, responses, alerts,
state, info) from the broker, as a pcapng capture for Wireshark (docs/captures.md).

    ppmid capture --state-dir run/broker --gateway 00DB1234567890A4 --out gw.pcapng [--seconds 60]

Subscribes as the read-only identity `monitor-capture` of a `ppmid broker` state dir
(issued, and the running broker's ACL reloaded, on first use). Runs until Ctrl-C or
--seconds; every packet is on disk as soon as it arrives.
"""
import os
import time

from host_tools.cli import CliError


def add_arguments(p):
    p.add_argument("--state-dir", required=True, help="the broker's state dir (ppmid broker start)")
    p.add_argument("--gateway", required=True, metavar="EUI", help="the gateway's EUI-64")
    p.add_argument("--out", required=True, metavar="FILE", help="the pcapng file to write")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")


def run(args):
    from host_tools import captures, pcap
    from host_tools.broker import BrokerError, gateway_identity
    try:
        eui = gateway_identity(args.gateway)
    except BrokerError as exc:
        raise CliError(str(exc))
    if args.seconds is not None and not 0 < args.seconds <= 30 * 86400:
        raise CliError("--seconds must be from 0 to 30 days")
    if os.path.isdir(args.out) or not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise CliError("--out %s: give a file in an existing folder" % args.out)
    if not os.path.isfile(os.path.join(args.state_dir, "broker.json")):
        raise CliError("no broker state in %s (ppmid broker start --state-dir DIR)" % args.state_dir)
    try:
        with pcap.PcapWriter(args.out) as writer:
            cap = captures.BrokerCapture(args.state_dir, eui, writer).start()
            print("capture: %s -> %s; Ctrl-C to stop" % (eui, args.out), flush=True)
            try:
                deadline = None if args.seconds is None else time.monotonic() + args.seconds
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
            finally:
                cap.stop()
    except (captures.CaptureError, pcap.PcapError) as exc:
        raise CliError(str(exc))
    print("capture: %d packets in %s" % (writer.count, args.out), flush=True)
    return 0
