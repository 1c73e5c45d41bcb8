"""`ppmid pn532-emulator`: a PN532 with virtual phones and tags on the board's NFC pty.

    ppmid pn532-emulator --state-dir /tmp/board            # pty from DIR/board.json
    ppmid pn532-emulator --pty /dev/pts/7 --phone cmd.bin  # a phone holding a command
    ppmid pn532-emulator --pty /dev/pts/7 --tag cmd.bin --tag-type 2
    ppmid pn532-emulator --new-pty --link /dev/ttyPN532EMU --tag cmd.bin   # for nfcpy

`--new-pty` makes a pty pair and serves its master; a reader program opens the printed slave
path. `--link PATH` also puts a symlink to that slave at PATH (removed on exit): nfcpy only
opens names it finds in /dev, so `nfc.ContactlessFrontend("tty:ttyPN532EMU:pn532")` opens
/dev/ttyPN532EMU (docs/nfc.md, "nfcpy").

`--phone FILE` / `--tag FILE` take a binary command or top-up envelope (docs/envelope.md,
version 1 or 2: `ppmid.topup.to_binary(ppmid.topup.sign(key, id, utrn, target))`); the phone
runs the scripted PPMID app (docs/nfc.md) and, once the gateway has pushed the result,
writes it to FILE.result.json. `--collect ID` places a phone that only asks for the result
of an earlier command. The target is placed after --place-after seconds and removed after
--hold seconds (0 = never). Runs until Ctrl-C.
"""
import base64
import json
import os
import signal
import time

from host_tools import emuboard
from host_tools.cli import CliError


def add_arguments(p):
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", help="the NFC pty to attach to (host side)")
    where.add_argument("--state-dir", help="emulated board state dir: uses board.json uarts.nfc")
    where.add_argument("--new-pty", action="store_true", help="make a pty pair; readers open the printed slave path")
    p.add_argument("--link", metavar="PATH", help="with --new-pty: symlink PATH to the slave (e.g. /dev/ttyPN532EMU)")
    p.add_argument("--baud", type=int, default=115200, help="HSU baud rate used for pacing (default 115200)")
    p.add_argument("--rf-kbps", type=int, default=0, help="model RF time at this bit rate (0: off)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="phone (HCE) latency per APDU")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--phone", metavar="FILE", help="place a phone holding this binary envelope")
    what.add_argument("--collect", metavar="ID", help="place a phone asking for the result of ID")
    what.add_argument("--tag", metavar="FILE", help="place a tag holding this binary envelope")
    p.add_argument("--tag-type", choices=("2", "4"), default="2", help="NFC Forum tag type (default 2: NTAG216)")
    p.add_argument("--tag-model", choices=("ntag213", "ntag215", "ntag216"), default="ntag216",
                   help="the type 2 tag's model (GET_VERSION, memory size)")
    p.add_argument("--place-after", type=float, default=0.0, help="seconds before the target is placed")
    p.add_argument("--hold", type=float, default=0.0, help="seconds the target stays (0: until Ctrl-C)")
    p.add_argument("--quiet", action="store_true", help="do not log emulator events")


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CliError("cannot read %s: %s" % (path, exc))


def _target(args):
    from host_tools.pn532_emulator import PhoneApp, Type2Tag, Type4Tag, ndef_mime_message
    if args.phone:
        data = _read(args.phone)
        ident = _envelope_id(data, args.phone)
        return PhoneApp(data, id=ident, latency=args.latency_ms / 1000.0)
    if args.collect:
        return PhoneApp(collect_id=args.collect, latency=args.latency_ms / 1000.0)
    if args.tag:
        data = _read(args.tag)
        _envelope_id(data, args.tag)
        msg = ndef_mime_message(data)
        try:
            return Type2Tag(msg, model=args.tag_model) if args.tag_type == "2" else Type4Tag(msg)
        except ValueError as exc:
            raise CliError(str(exc))
    return None


def _envelope_id(data, name):
    # version 1: a command; 2: a top-up (docs/envelope.md "Top-ups"); the id sits at the
    # same place in both
    if len(data) < 4 or data[0] not in (1, 2) or 3 + data[2] > len(data):
        raise CliError("%s is not a binary command or top-up envelope (docs/envelope.md)" % name)
    return data[3:3 + data[2]].decode("ascii", "replace")


def run(args):
    from host_tools.pn532_emulator import PN532Emulator
    if args.link and not args.new_pty:
        raise CliError("--link needs --new-pty")
    if not 300 <= args.baud <= 4000000:
        raise CliError("--baud must be from 300 to 4000000")
    for name in ("rf_kbps", "latency_ms", "place_after", "hold"):
        if not 0 <= getattr(args, name) <= 86400000:  # also refuses nan
            raise CliError("--%s must be 0 or more" % name.replace("_", "-"))
    target = _target(args)
    log = None if args.quiet else (lambda text: print("pn532-emulator: " + text, flush=True))
    link = None
    hold = None
    if args.new_pty:
        emu, path = PN532Emulator.on_new_pty(baud=args.baud, rf_kbps=args.rf_kbps or None, log=log)
        if args.link:
            try:
                os.symlink(path, args.link)
            except OSError as exc:
                emu.stop()
                raise CliError("cannot link %s to %s: %s" % (args.link, path, exc))
            link = args.link
    else:
        path = args.pty or emuboard.uart_pty(args.state_dir, "nfc")
        from host_tools.ports import PortLock
        hold = PortLock(path).acquire()  # PortBusy when another emulator (or tool) serves this pty
        try:
            emu = PN532Emulator.on_path(path, baud=args.baud, rf_kbps=args.rf_kbps or None, log=log)
        except OSError as exc:
            hold.release()
            raise CliError("cannot open %s: %s" % (path, exc.strerror or exc))
    emu.start()
    # SIGTERM ends it as Ctrl-C does, so that the /dev link goes too
    signal.signal(signal.SIGTERM, _interrupt)
    print("pn532-emulator: PN532 v1.6 on %s at %d baud" % (path, args.baud), flush=True)
    if link:
        print("pn532-emulator: %s -> %s" % (link, path), flush=True)
    placed_at = None
    reported = False
    try:
        start = time.monotonic()
        while True:
            now = time.monotonic()
            if target is not None and placed_at is None and now - start >= args.place_after:
                emu.place(target)
                placed_at = now
                print("pn532-emulator: %s placed" % type(target).__name__, flush=True)
            if placed_at is not None and args.hold and now - placed_at >= args.hold and emu.target is not None:
                emu.remove()
                print("pn532-emulator: target removed", flush=True)
            result = getattr(target, "result", None)
            if result is not None and not reported:
                reported = True
                _save_result(args, target, result)
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        if hold is not None:
            hold.release()
        if link:
            try:
                os.unlink(link)
            except OSError:
                pass
        statuses = getattr(target, "statuses", None)
        if statuses:
            print("pn532-emulator: phone statuses: %s" % ", ".join("%04X %s" % (sw, code) for sw, code, _ in statuses))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt()


def _save_result(args, target, result):
    out = dict(result)
    out["gbcs"] = base64.b64encode(result["gbcs"]).decode() if result.get("gbcs") else None
    print("pn532-emulator: result %s" % json.dumps(out), flush=True)
    base = args.phone or ("collect-" + args.collect)
    # Written whole then renamed: a script (or test) waiting for the file to appear
    # must never read it half-written (CI once read it empty).
    path = base + ".result.json"
    with open(path + ".part", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(path + ".part", path)
