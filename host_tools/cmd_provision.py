"""`ppmid provision --port PORT --gateway EUI --state-dir DIR`: write a gateway's config,
certificate, key and envelope key onto its flash (docs/config.md), atomically
(host_tools.provision does the work and says how).

With --install-code HEX|new the config also gets the Zigbee module's install code
(zigbee.install_code), and once the board holds it, the entry the DCC would add to the
Communications Hub's device log for the installer (EUI-64 + install code) is added to
--device-log, the file the emulated CH reads (host_tools/device_log.py, docs/zigbee.md)."""
import json
import os

from host_tools import provision


def add_arguments(p):
    p.add_argument("--port", required=True, help="the board's REPL: a serial port or the emulated board's pty")
    p.add_argument("--gateway", required=True, metavar="EUI", help="this gateway's EUI-64 (16 hex digits)")
    p.add_argument("--state-dir", required=True, help="broker state dir (CA, certificates, keys; ppmid broker start)")
    p.add_argument("--config", metavar="FILE", help="base config JSON merged under the options below")
    p.add_argument("--broker-host", help="default: the state dir broker's host")
    p.add_argument("--broker-port", type=int, help="default: the state dir broker's port")
    p.add_argument("--server-hostname", help="name in the broker certificate (default ppmid-broker)")
    p.add_argument("--ssid", help="Wi-Fi network")
    p.add_argument("--password", help="Wi-Fi password")
    p.add_argument("--han-device", action="append", default=[], metavar="EUI:TYPE[:NWK[:ENDPOINT]]",
                   help="a device on this gateway's HAN, e.g. 00DB1234567890A1:GSME; an ESME that takes top-ups "
                        "needs its network address: 00DB1234567890A0:ESME:0x4A21 (endpoint 1 unless given); "
                        "repeatable")
    p.add_argument("--envelope-key-file", help="32-byte envelope key (default: STATE_DIR/keys/EUI.key, created if absent)")
    provision.add_user_arguments(p)  # --user NAME --role ROLE --originators ORIGS, --role-profile (docs/security.md)
    p.add_argument("--install-code", metavar="HEX|new",
                   help="the Zigbee module's install code as printed (6, 8, 12 or 16 bytes plus its CRC-16; spaces "
                        "and hyphens ignored), or `new` for a random 16-byte code with its CRC; goes into the "
                        "config (zigbee.install_code) and the device log")
    p.add_argument("--device-log", metavar="FILE",
                   help="the emulated CH's device log the entry is added to (JSON lines; default "
                        "STATE_DIR/device-log.jsonl; needs --install-code)")
    p.add_argument("--zigbee-eui", metavar="EUI",
                   help="the EUI-64 the device-log entry names: the module's (default: --gateway, a PPMID's "
                        "device id being its HAN EUI-64)")
    p.add_argument("--root", default="", help="flash mount point on the board (default: /)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the files; nothing is written to the board (on the host, "
                        "the gateway's certificate and envelope key are still created in the "
                        "state dir if missing)")


def _install_code(args):
    """(code bytes or None, device log path or None, --zigbee-eui's 8 bytes or None); the
    log is read and --zigbee-eui parsed first, so a garbled one stops us before the board
    is touched."""
    from host_tools import device_log
    from host_tools.cli import CliError, install_code_option
    if args.install_code is None:
        if args.device_log or args.zigbee_eui:
            raise CliError("--device-log and --zigbee-eui go with --install-code HEX|new")
        return None, None, None
    eui = device_log.parse_eui(args.zigbee_eui, "--zigbee-eui") if args.zigbee_eui else None
    code = install_code_option(args.install_code)  # its InstallCodeError prints as it is (E_INSTALL_CODE*)
    path = args.device_log or os.path.join(args.state_dir, device_log.DEFAULT_NAME)
    if os.path.exists(path):
        device_log.read(path)
    elif not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise CliError("--device-log %s: its folder does not exist" % path)
    return code, path, eui


def run(args):
    from host_tools import device_log
    code, log_path, eui = _install_code(args)
    files, cfg = provision.build(args.state_dir, args.gateway, config_file=args.config, broker_host=args.broker_host,
                                 broker_port=args.broker_port, server_hostname=args.server_hostname, ssid=args.ssid,
                                 password=args.password, han_devices=args.han_device,
                                 envelope_key_file=args.envelope_key_file, user_tokens=args.user_tokens,
                                 install_code=code)
    if code is not None:
        eui = eui or device_log.parse_eui(cfg["gateway"], "--gateway")
        print("install code %s (the installer's entry, CRC last; EUI-64 %s)" % (device_log.printed(code),
                                                                                eui.hex().upper()))
    if args.dry_run:
        for p in list(provision.ORDER) + sorted(p for p in files if p not in provision.ORDER):
            print("%s %d bytes" % (args.root + p, len(files[p])))
        print(json.dumps(cfg, indent=1))
        if code is not None:
            print("dry run: device log %s not written" % log_path)
        return 0
    paths = provision.write(args.port, files, args.root)
    provision.remember_users(args.state_dir, cfg)
    for p in paths:
        print("wrote %s%s (%d bytes)" % (args.root, p, len(files[p])))
    if code is not None:
        # after the board took the code: a log entry for a gateway that never got it would
        # let a rehearsal pass that the field would fail
        print("device log %s: %s" % (log_path, json.dumps(device_log.add(log_path, eui.hex(), code))))
    print("provisioned gateway %s for broker %s:%s" % (cfg["gateway"], cfg["broker"].get("host"), cfg["broker"].get("port")))
    return 0
