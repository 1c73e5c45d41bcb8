"""`ppmid ncp-emulator`: an EFR32 NCP + Communications Hub + meters on the board's Zigbee pty.

    ppmid ncp-emulator --state-dir run --log run/ch.jsonl
    ppmid ncp-emulator --pty /dev/pts/7 --ezsp-version 14 --byte-error-rate 0.01 --reset-every 200

    ppmid ncp-emulator --state-dir run --device-log BROKER/device-log.jsonl --eui64 00DB1234567890A4

With --device-log the module starts uncommissioned and the CH is trust centre with that
device log (written by `ppmid provision --install-code`; docs/zigbee.md "Commissioning"):
the gateway joins with its install code and completes CBKE before the tunnel opens.
Runs until interrupted. Every GBCS message the CH receives or sends goes to --log (JSONL)
and to --pcap (pcapng for Wireshark, docs/captures.md).
Type commands on stdin while it runs: `alert ESME`, `alert GSME`, `reset`, `network-down 5`,
`close-tunnel 2`, `forget-tunnel 2`, `busy 10`, `stats`, and for the ESME's top-ups
(docs/utrn.md): `esme` (credit and counts), `esme keypad-lock|silent|unreachable on|off`;
with --device-log, `replace-ch EUI` (another CH, that EUI-64, in the trust centre's place:
NcpEmulator.replace_ch; the gateway then needs an ordered re-commission, `ppmid commission`)."""
import json
import os
import sys
import threading
import time

from host_tools import emuboard
from host_tools.cli import CliError


def add_arguments(p):
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", help="the pty to serve (the host side of the board's Zigbee UART)")
    where.add_argument("--state-dir", help="an emulated board's state directory: uses board.json uarts.zigbee")
    p.add_argument("--baud", type=int, default=115200, help="pace bytes to the board at this rate (0: no pacing)")
    p.add_argument("--ezsp-version", type=int, default=13, help="EZSP protocol version the NCP speaks (default 13)")
    p.add_argument("--max-payload", type=int, default=82, help="maximumPayloadLength the NCP reports")
    p.add_argument("--log", help="JSONL log of every GBCS message the CH receives and sends")
    p.add_argument("--pcap", metavar="FILE", help="the same messages as a pcapng capture for Wireshark (docs/captures.md)")
    p.add_argument("--corpus", help="GBCS corpus dir: canned RESPONSEs for known COMMANDs, ALERTs on demand")
    p.add_argument("--byte-error-rate", type=float, default=0.0, help="probability a byte is corrupted (both ways)")
    p.add_argument("--drop-rate", type=float, default=0.0, help="probability a whole ASH frame is lost")
    p.add_argument("--late-ack-rate", type=float, default=0.0, help="probability an NCP ACK is delayed")
    p.add_argument("--late-ack-ms", type=int, default=600)
    p.add_argument("--reset-every", type=int, default=0, help="NCP resets itself after every N host DATA frames")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device-log", metavar="FILE",
                   help="start the module uncommissioned, the CH as trust centre with this device log (JSON lines "
                        "of eui64 and install_code, as `ppmid provision --install-code` writes it)")
    p.add_argument("--eui64", metavar="EUI",
                   help="the emulated module's EUI-64 (default 000D6F0000A1B2C3); with --device-log, the "
                        "gateway's EUI-64 its entry names")
    p.add_argument("--ch-time", choices=("good", "silent", "unsynced", "unsupported"), default="good",
                   help="how the CH answers a read of its clock (ZCL Time cluster): its own clock, Master|Synchronized "
                        "(good); no answer; TimeStatus 0; UNSUPPORTED_ATTRIBUTE. Console: ch-time MODE")
    p.add_argument("-v", "--verbose", action="store_true", help="print link events")




ESME_KNOBS = {"keypad-lock": "keypad_lock", "silent": "silent", "unreachable": "unreachable"}


def esme_command(esme, words):
    """`esme` -> the emulated ESME's figures; `esme KNOB on|off` sets a fault knob. Raises
    ValueError on anything else. Runs on the emulator's loop."""
    if not words:
        return esme.figures()
    if len(words) != 2 or words[0] not in ESME_KNOBS or words[1] not in ("on", "off"):
        raise ValueError("esme [%s on|off]" % "|".join(sorted(ESME_KNOBS)))
    setattr(esme, ESME_KNOBS[words[0]], words[1] == "on")
    return esme.figures()


def _esme(emu, words):
    print(json.dumps(emu.call(esme_command, emu.ch.esme, words)), flush=True)


def _usage(text):
    raise ValueError("usage: " + text)


def _console(emu):
    actions = {
        "alert": lambda a: emu.send_alert(a[0] if a else "ESME"),
        "reset": lambda a: emu.reset_ncp(),
        "network-down": lambda a: emu.network_down(float(a[0]) if a else None),
        "network-up": lambda a: emu.network_up(),
        "close-tunnel": lambda a: emu.close_tunnel(float(a[0]) if a else None),
        "forget-tunnel": lambda a: emu.forget_tunnel(float(a[0]) if a else None),
        "busy": lambda a: emu.tunnel_busy(float(a[0]) if a else 10.0),
        "stats": lambda a: print(json.dumps(emu.stats(), indent=1)),
        "esme": lambda a: _esme(emu, a),
        "ch-time": lambda a: emu.set_ch_time(a[0] if a else "good"),
        "replace-ch": lambda a: print("trust centre %s replaced by %s" % (emu.replace_ch(a[0]), a[0].upper()),
                                      flush=True) if len(a) == 1 else _usage("replace-ch EUI-64 (16 hex digits)"),
    }
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        fn = actions.get(words[0])
        if fn is None:
            print("commands: " + ", ".join(sorted(actions)), flush=True)
            continue
        try:
            fn(words[1:])
            print("ok", flush=True)
        except Exception as exc:
            print("error: %s" % exc, flush=True)


def run(args):
    from host_tools.ncp_emulator import NcpEmulator, Faults
    pty = args.pty or emuboard.uart_pty(args.state_dir, "zigbee")
    emuboard.check_board_link(pty)  # DIR/zigbee of a stopped board: E_BOARD_NOT_RUNNING, not "no such pty"
    if not os.path.exists(pty):
        raise CliError("no such pty: %s" % pty)
    if os.path.isdir(pty) or os.path.isfile(pty):  # a pty is a character device
        raise CliError("%s is not a pty (a %s)" % (pty, "directory" if os.path.isdir(pty) else "regular file"))
    if not 1 <= args.ezsp_version <= 255:
        raise CliError("--ezsp-version must be 1..255 (the firmware accepts 8..18)")
    if args.baud != 0 and not 300 <= args.baud <= 4000000:
        raise CliError("--baud must be 0 (no pacing) or from 300 to 4000000")
    if not 16 <= args.max_payload <= 255:
        raise CliError("--max-payload must be from 16 to 255 bytes")
    for name in ("byte_error_rate", "drop_rate", "late_ack_rate"):
        if not 0 <= getattr(args, name) < 1:  # also nan
            raise CliError("--%s must be a probability from 0 to below 1" % name.replace("_", "-"))
    if not 0 <= args.late_ack_ms <= 60000 or args.reset_every < 0:
        raise CliError("--late-ack-ms must be from 0 to 60000 and --reset-every >= 0")
    if args.corpus is not None and not os.path.isdir(args.corpus):
        raise CliError("--corpus %s is not a folder" % args.corpus)
    for name in ("log", "pcap"):
        path = getattr(args, name)
        if path is not None and (os.path.isdir(path) or not os.path.isdir(os.path.dirname(os.path.abspath(path)))):
            raise CliError("--%s %s: give a file in an existing folder" % (name, path))
    commissioning = None
    if args.eui64 is not None:
        digits = args.eui64.replace(":", "").replace("-", "")
        try:
            eui = bytes.fromhex(digits)
        except ValueError:
            eui = b""
        if len(eui) != 8:
            raise CliError("--eui64 must be 16 hex digits, not %r" % args.eui64)
        if not args.device_log:
            raise CliError("--eui64 goes with --device-log (a commissioned module keeps its own EUI-64)")
    if args.device_log:
        from host_tools import device_log
        commissioning = {"device_log": device_log.read(args.device_log)}
        if args.eui64:
            commissioning["eui64"] = eui
    ch_options = {"time_mode": args.ch_time}
    if args.pcap:
        from host_tools import captures, pcap
        writer = pcap.PcapWriter(args.pcap)
        ch_options["on_record"] = lambda entry: captures.ch_entry(writer, entry)
    faults = Faults(byte_error_rate=args.byte_error_rate, drop_rate=args.drop_rate, late_ack_rate=args.late_ack_rate,
                    late_ack_ms=args.late_ack_ms, reset_every=args.reset_every, seed=args.seed)
    corpus = args.corpus
    if corpus is None:
        guess = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "shared", "vectors", "gbcs", "rtds-4.5.0")
        corpus = guess if os.path.isdir(guess) else None
    from host_tools.ports import PortLock
    # PortBusy when another emulator (or tool) serves this pty: each would get half the frames
    hold = PortLock(pty).acquire()
    try:
        emu = NcpEmulator(pty, baud=args.baud, ezsp_version=args.ezsp_version, max_payload=args.max_payload,
                          log_path=args.log, corpus_dir=corpus, faults=faults, verbose=args.verbose,
                          ch_options=ch_options, commissioning=commissioning).start()
    except BaseException:
        hold.release()
        raise
    print("ncp-emulator: EZSP v%d NCP + CH on %s (log %s)%s" % (
        args.ezsp_version, pty, args.log or "-",
        ", uncommissioned, CH device log %s" % args.device_log if args.device_log else ""), flush=True)
    if sys.stdin and sys.stdin.isatty():
        threading.Thread(target=_console, args=(emu,), daemon=True).start()
    try:
        while True:
            time.sleep(1)
    finally:
        emu.stop()
        hold.release()
        if args.pcap:
            writer.close()
