"""`ppmid emulate`: the whole gateway on one host (what `make run` runs).

Starts mosquitto (TLS, ACLs), the emulated board, the NCP + Communications Hub emulator on
its Zigbee UART; provisions the gateway (the corpus's test titles: PPMID 00DB1234567890A4,
ESME ...A0, GSME ...A1 on its HAN), deploys firmware/, waits for the ready banner and for
the gateway to be online on the broker. Then replays a trace (--trace FILE, or a sample
built from the corpus) through MQTT as a DCC User, with optional faults, writes the report
(--report, default STATE_DIR/report.json) and prints a table. Without --trace it then
follows the board's console until Ctrl-C. docs/emulate.md.
With --update KIND the gateway is provisioned with the emulation's update key
(STATE_DIR/update/operator.pem) and an update of that kind is offered during the replay;
the exit status is 1 also when its result is not the expected one (good: applied,
bad-signature: refused, crash-at-boot: rolled-back).
The emulated Zigbee module starts uncommissioned: the gateway is provisioned with an
install code, the emulated CH's device log (STATE_DIR/emulate-device-log.jsonl, or --device-log)
holds the gateway's EUI-64 with it, and the gateway joins, completes CBKE and gets the
tunnel before the replay; the steps are printed and the report's "commissioning" has
them. --commissioned starts from a module that holds the network already (the old start).
"""
import json
import os
import signal
import sys
import time

from host_tools.cli import CliError, check_output_file, check_state_dir, install_code_option


# the Zigbee specification's example install code (with its CRC): what an emulated gateway
# is provisioned with unless told otherwise
DEFAULT_INSTALL_CODE = "83FED3407A939723A5C639B26916D505C3B5"


def add_arguments(p):
    p.add_argument("--state-dir", default="run", help="state directory (board, broker, CH log; default: run)")
    p.add_argument("--board", default="emulated", help="emulated board definition (default: emulated)")
    p.add_argument("--trace", metavar="FILE", help="trace to replay (docs/trace.md); default: a sample built from the corpus")
    p.add_argument("--report", metavar="OUT.json", help="report file (default: STATE_DIR/report.json)")
    p.add_argument("--kill-board", type=int, default=0, metavar="N", help="SIGKILL the board N times at random moments")
    p.add_argument("--uart-error-rate", type=float, default=0.0, metavar="P",
                   help="bit errors on the Zigbee UART, probability per byte, both directions")
    p.add_argument("--gpf-delay-ms", type=float, metavar="MS",
                   help="how long the emulated GPF takes to answer for the GSME (default 50)")
    p.add_argument("--broker-restarts", type=int, default=0, metavar="N", help="restart the broker N times")
    p.add_argument("--broker-engine", choices=("mosquitto", "rabbitmq"), default="mosquitto",
                   help="the broker the emulation starts (default mosquitto; rabbitmq: Debian rabbitmq-server)")
    p.add_argument("--wifi-drops", type=int, default=0, metavar="N", help="drop the Wi-Fi access point N times")
    p.add_argument("--broker-name", metavar="NAME",
                   help="give the gateway the broker by this name, which a DNS server on loopback (the emulated "
                        "Wi-Fi's resolver) answers: the firmware's own name lookup runs (docs/emulate.md)")
    p.add_argument("--han-outages", type=int, default=0, metavar="N",
                   help="take the HAN away N times for 1-4 s; the module does not find it again by itself, the "
                        "gateway rejoins after zigbee.rejoin_after_s (e.g. --set zigbee.rejoin_after_s=2)")
    p.add_argument("--ezsp-version", type=int, default=13, metavar="N",
                   help="EZSP protocol version the emulated Zigbee module speaks (default 13; 14 names each "
                        "frame's sender EUI-64; the firmware accepts 8..18)")
    p.add_argument("--han-key-switch", action="store_true",
                   help="with --han-outages: the CH switches its network key during each outage (the secured "
                        "rejoin fails, the trust-centre rejoin brings the new key)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a gateway config value, e.g. limits.rate_per_s=5 (repeatable)")
    p.add_argument("--seed", type=int, help="random seed for the fault moments")
    p.add_argument("--speed", type=float, default=1.0, help="trace time scale: 2 = twice as fast")
    p.add_argument("--settle-s", type=float, help="wait after the last command (default: response timeout + 20 s)")
    p.add_argument("--keep-journal", action="store_true",
                   help="keep the gateway's journal (anti-replay counters) from an earlier run; "
                        "by default each run starts as a fresh gateway")
    p.add_argument("--nfc", action="store_true",
                   help="attach the PN532 emulator to the board's NFC UART (the app then starts its NFC service)")
    p.add_argument("--wired", action="store_true",
                   help="turn the wired road on and attach a laptop's client to the board's wired pty "
                        "(implied when the trace has lines with \"via\": \"serial\")")
    p.add_argument("--pcap", metavar="FILE",
                   help="capture the HAN and MQTT traffic as pcapng for Wireshark (docs/captures.md)")
    p.add_argument("--html", metavar="OUT.html",
                   help="also write the report as one HTML file with plots (latency, faults, roads)")
    p.add_argument("--no-deploy", action="store_true", help="boot what is already in the board's flash")
    p.add_argument("--follow", action="store_true", help="after the replay, follow the console until Ctrl-C")
    p.add_argument("--no-follow", action="store_true", help="exit after the sample replay")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for the gateway to come up")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--commissioned", action="store_true",
                       help="start from a Zigbee module that holds the CH's network already (no install code, "
                            "no join, no CBKE; the report's \"commissioning\" state is \"preset\")")
    start.add_argument("--commission", action="store_true",
                       help="start the emulated Zigbee module uncommissioned (the default; kept for scripts)")
    p.add_argument("--install-code", metavar="HEX|new",
                   help="the gateway's install code as printed (default: the one --device-log holds for the "
                        "gateway, else the Zigbee spec's example code), or `new` for a random one with its CRC")
    p.add_argument("--ch-install-code", metavar="HEX",
                   help="the install code the emulated CH's device log holds for the gateway instead of the "
                        "provisioned one (rehearses a wrong code)")
    p.add_argument("--device-log", metavar="FILE",
                   help="the emulated CH's device log: a file `ppmid provision --install-code` wrote (JSON lines "
                        "of eui64 and install_code); the gateway is provisioned with the code it holds for "
                        "00DB1234567890A4 (refused without one); default: made in STATE_DIR with the gateway's code")
    p.add_argument("--update", choices=("good", "bad-signature", "crash-at-boot"),
                   help="build and offer an application update during the replay: a newer version, one signed with "
                        "the wrong key, or one that raises at boot (docs/update.md); the report's \"update\" says "
                        "what happened")


def follow_console(board, since):
    """Copy the console log to stdout until Ctrl-C."""
    pos = since
    while True:
        data = board.console_bytes()
        if len(data) > pos:
            sys.stdout.write(data[pos:].decode("utf-8", "replace").replace("\r\n", "\n"))
            sys.stdout.flush()
            pos = len(data)
        if board.proc is not None and board.proc.poll() is not None:
            raise CliError("the emulated board's supervisor exited (%s)" % board.proc.returncode)
        time.sleep(0.1)


def _lines(args, E):
    if args.trace:
        from host_tools.cmd_replay import load_trace
        return load_trace(args.trace), args.trace
    lines = E.sample_trace()
    return lines, "built-in sample (%d commands from %s)" % (
        len(lines), E.corpus_dir() or "the embedded corpus commands")


def _commissioning(args):
    """Emulation(commissioning=...) from the options: None with --commissioned."""
    if args.commissioned:
        if args.ch_install_code or args.device_log or args.install_code is not None:
            raise CliError("--commissioned starts from a module that holds the network: it takes no "
                           "--install-code, --ch-install-code or --device-log")
        return None
    if args.ch_install_code and args.device_log:
        raise CliError("--ch-install-code and --device-log both say what the CH's device log holds: give one")
    if args.device_log:
        code = _logged_install_code(args.device_log, args.install_code)
    else:
        code = install_code_option(DEFAULT_INSTALL_CODE if args.install_code is None else args.install_code,
                                   "--install-code")
    out = {"install_code": code.hex().upper()}
    if args.ch_install_code is not None:  # a code the CH holds is typed from a log, never made here
        out["ch_install_code"] = install_code_option(args.ch_install_code, "--ch-install-code", new=False).hex().upper()
    out["device_log"] = args.device_log
    return out


def _logged_install_code(path, given):
    """The install code the device log at path holds for the emulation's gateway, so that
    the CH admits it; --install-code (given) may only repeat it (`new` never does). CliError
    (E_DEVICE_LOG) before anything starts otherwise."""
    from host_tools import device_log
    from host_tools.emulate import GATEWAY
    try:
        code = device_log.install_code_for(path, bytes.fromhex(GATEWAY))
        if given is not None and install_code_option(given, "--install-code") != code:
            raise device_log.DeviceLogError(
                "--install-code %s is not the code device log %s holds for %s (%s): give one of them"
                % (given, path, GATEWAY, device_log.printed(code)))
    except device_log.DeviceLogError as exc:
        raise CliError(str(exc))
    return code


def print_commissioning(emu):
    """The commissioning steps the gateway logged during start-up, one line each."""
    c = emu.commissioning_report()
    if c["state"] == "preset":
        print("commissioning: the emulated module holds the network already (--commissioned)", flush=True)
        return
    from host_tools import device_log
    print("commissioning: gateway EUI-64 %s, install code %s; CH device log %s" % (
        emu.gateway, device_log.printed(bytes.fromhex(emu.commissioning["install_code"])), c.get("device_log")),
        flush=True)
    for step in c["steps"]:
        print("commissioning: " + step, flush=True)
    if c["state"] != "commissioned":
        print("commissioning: %s%s (the gateway retries; commands wait for the HAN)" % (
            c["state"], " " + c["error"] if c.get("error") else ""), flush=True)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def run(args):
    from host_tools import emulate as E
    from host_tools.boards import BoardError
    from host_tools.emuboard import BoardTimeout
    from host_tools.broker import BrokerError
    from host_tools.captures import CaptureError
    try:
        overrides = E.parse_sets(args.set)
    except E.EmulateError as exc:
        raise CliError(str(exc))
    if not 0.0 <= args.uart_error_rate < 1.0:
        raise CliError("--uart-error-rate must be from 0 to 1 (probability per byte)")
    if args.gpf_delay_ms is not None and not 0 <= args.gpf_delay_ms <= 60000:
        raise CliError("--gpf-delay-ms must be from 0 to 60000")
    for name in ("kill_board", "broker_restarts", "wifi_drops", "han_outages"):
        if getattr(args, name) < 0:
            raise CliError("--%s must be >= 0" % name.replace("_", "-"))
    if args.han_key_switch and (not args.han_outages or args.commissioned):
        raise CliError("--han-key-switch needs --han-outages and a gateway that commissions (not --commissioned)")
    if not 1 <= args.timeout <= 3600:
        raise CliError("--timeout must be from 1 to 3600 seconds")
    if not 8 <= args.ezsp_version <= 18:
        # (ppmid ncp-emulator takes 1..255, to show the firmware's refusal; a whole
        # emulation with a module the gateway refuses never gets to ready)
        raise CliError("--ezsp-version must be from 8 to 18 (the versions the firmware speaks); "
                       "`ppmid ncp-emulator --ezsp-version N` shows the gateway's refusal of others")
    check_state_dir(args.state_dir)
    check_output_file("--pcap", args.pcap)
    check_output_file("--html", args.html)
    if args.broker_name is not None:
        from host_tools.emulate import check_host_name
        try:
            check_host_name(args.broker_name)
        except E.EmulateError as exc:
            raise CliError("--broker-name: %s" % exc)
    from host_tools.emuboard import emulated_definition
    emulated_definition(args.board)  # an unknown or real board: refused before the SNTP server and broker start
    commissioning = _commissioning(args)
    lines, what = _lines(args, E)
    nfc_lines = sum(1 for x in lines if x.get("via", "mqtt") != "mqtt")
    if nfc_lines and not args.nfc:
        print("emulate: %d NFC line(s) in the trace will be skipped: add --nfc to carry them through the "
              "PN532 emulator" % nfc_lines, file=sys.stderr, flush=True)
    report_path = args.report or os.path.join(args.state_dir, "report.json")
    from host_tools.cmd_replay import check_run_options
    check_run_options(args.speed, args.settle_s, report_path)
    if args.update:  # the gateway takes updates signed with the emulation's key (made once)
        overrides = E.merge(E.update_overrides(args.state_dir), overrides)
    emu = E.Emulation(args.state_dir, board=args.board, overrides=overrides, uart_error_rate=args.uart_error_rate,
                      deploy=not args.no_deploy, ready_timeout=args.timeout, fresh_journal=not args.keep_journal,
                      nfc=args.nfc, gpf_delay_s=None if args.gpf_delay_ms is None else args.gpf_delay_ms / 1000.0,
                      wired=args.wired or any(x.get("via") == "serial" for x in lines), pcap=args.pcap,
                      broker_engine=args.broker_engine, commissioning=commissioning, broker_name=args.broker_name,
                      ezsp_version=args.ezsp_version)
    try:
        emu.check_config()
    except E.EmulateError as exc:
        raise CliError(str(exc))
    # A SIGTERM (e.g. `timeout make run`, a CI job ending) stops everything we started,
    # broker included, exactly like Ctrl-C: no mosquitto or board left behind.
    signal.signal(signal.SIGTERM, _terminate)
    from host_tools.progress import Progress
    # SNTP, broker, board, NCP, provision, deploy (5), ready, commissioning: a bar on a terminal, the
    # "emulate: ..." lines otherwise
    bar = Progress("emulate", 10 + bool(args.pcap) + bool(args.nfc) + (commissioning is not None))
    sink = [bar.step]  # what the emulation's log goes to: the bar during start-up, then lines
    emu.log = lambda msg: sink[0](msg)  # (the SNTP server and the replayer keep emu.log)
    try:
        try:
            emu.start()
        except (E.EmulateError, BoardError, BoardTimeout, BrokerError, CaptureError) as exc:
            raise CliError(str(exc))
        finally:
            bar.close()
            sink[0] = E.log_default
        st = emu.board.state()
        print(emu.banner.group(0).decode())
        print_commissioning(emu)
        print("emulate: REPL %s (mpremote connect %s resume), UARTs %s, broker 127.0.0.1:%d, state dir %s; Ctrl-C to stop"
              % (st["repl"], st["repl"], st["uarts"], emu.broker.port, emu.state_dir), flush=True)
        chaos = None
        if args.kill_board or args.broker_restarts or args.wifi_drops or args.han_outages:
            chaos = E.Chaos(args.kill_board, args.broker_restarts, args.wifi_drops, seed=args.seed,
                            han_outages=args.han_outages, han_key_switch=args.han_key_switch)
        print("emulate: replaying %s" % what, flush=True)
        upd = E.UpdateRun(emu, args.update, log=E.log_default).start() if args.update else None
        bar = Progress("replay", len(lines))
        try:
            rep = emu.replay(lines, chaos=chaos, settle_s=args.settle_s, speed=args.speed,
                             progress=lambda n, total: bar.update(n))
        finally:
            bar.close()
        if upd is not None:
            rep["update"] = upd.join()
        rep["trace"] = os.path.abspath(args.trace) if args.trace else what
        os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
        with open(report_path, "w") as f:
            json.dump(rep, f, indent=1, sort_keys=True)
        print(E.table(rep))
        print("report: %s" % report_path, flush=True)
        if args.html:
            from host_tools import report_html
            report_html.write(rep, args.html, "PPMID emulate report")
            print("html report: %s" % args.html, flush=True)
        if args.follow or (not args.trace and not args.no_follow):
            print("emulate: the gateway keeps running (ppmid send --state-dir %s --gateway %s ...); "
                  "console follows, Ctrl-C to stop" % (emu.broker_dir, emu.gateway), flush=True)
            follow_console(emu.board, emu.board.mark())
        # a copy reaching a meter twice is allowed (a resend after a crash, refused by the
        # meter's anti-replay); a command executed twice is not
        bad = rep["lost_count"] or rep.get("executed_twice")
        if upd is not None:
            want = {"good": "applied", "bad-signature": "refused", "crash-at-boot": "rolled-back"}[args.update]
            print("update: %s -> %s (%s), running %s" % (args.update, rep["update"]["result"], want,
                                                        rep["update"]["version_after"]), flush=True)
            bad = bad or rep["update"]["result"] != want
        return 1 if bad else 0
    except KeyboardInterrupt:
        print("\nemulate: stopping", flush=True)
        return 0
    finally:
        emu.stop()
