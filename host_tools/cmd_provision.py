"""`ppmid provision --port PORT --gateway EUI --state-dir DIR`: write a gateway's config,
certificate, key and envelope key onto its flash (docs/config.md), atomically.

Everything is built and validated on the host first (ppmid.config.validate), then copied
with mpremote under temporary names (NAME.tmp) and only then renamed into place, the
config last: a board interrupted half-way keeps its previous, complete set (or none) and
never a config that points at missing certificates. The copy is read back (SHA-256) before
the renames. Works on the emulated board (`ppmid board start`) and a real ESP32: mpremote
`resume` is used so the board is not soft-reset.
"""
import hashlib
import json
import os
import tempfile

from host_tools.cli import CliError


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
    p.add_argument("--han-device", action="append", default=[], metavar="EUI:TYPE",
                   help="a device on this gateway's HAN, e.g. 00DB1234567890A1:ESME; repeatable")
    p.add_argument("--envelope-key-file", help="32-byte envelope key (default: STATE_DIR/keys/EUI.key, created if absent)")
    p.add_argument("--root", default="", help="flash mount point on the board (default: /)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the files; nothing is written to the board (on the host, "
                        "the gateway's certificate and envelope key are still created in the "
                        "state dir if missing)")


def build(args):
    """(files {flash path: bytes}, config dict) or CliError."""
    from host_tools import mqtt_tools as mt
    from host_tools.broker import BrokerError, gateway_identity
    from ppmid import config
    try:
        eui = gateway_identity(args.gateway)
    except BrokerError as exc:
        raise CliError(str(exc))
    cfg = {}
    if args.config:
        try:
            with open(args.config) as f:
                cfg = json.load(f)
        except (OSError, ValueError, RecursionError) as exc:
            raise CliError("cannot read --config %s: %s" % (args.config, exc or "nested too deeply"))
        if not isinstance(cfg, dict):
            raise CliError("--config must hold a JSON object")
    info = {}
    if os.path.exists(os.path.join(args.state_dir, "broker.json")):
        try:
            info = mt.broker_info(args.state_dir)
        except RuntimeError as exc:
            raise CliError(str(exc))
    elif not os.path.exists(os.path.join(args.state_dir, "ca.pem")):
        raise CliError("no broker state in %s: run `ppmid broker start --state-dir %s` first" % (args.state_dir, args.state_dir))
    for name in ("broker", "wifi", "han"):  # merged with the options below: must be objects
        if name in cfg and not isinstance(cfg[name], dict):
            raise CliError("config refused: %s must be an object, not %r" % (name, cfg[name]))
    if "devices" in cfg.get("han", {}) and not isinstance(cfg["han"]["devices"], list):
        raise CliError("config refused: han.devices must be a list")
    cfg["version"] = 1
    cfg["gateway"] = eui
    broker = dict(cfg.get("broker", {}))
    for key, val in (("host", args.broker_host or info.get("host")), ("port", args.broker_port or info.get("port")),
                     ("server_hostname", args.server_hostname or info.get("server_hostname"))):
        if val is not None:
            broker[key] = val
    cfg["broker"] = broker
    if args.ssid is not None or args.password is not None:
        wifi = dict(cfg.get("wifi", {}))
        if args.ssid is not None:
            wifi["ssid"] = args.ssid
        if args.password is not None:
            wifi["password"] = args.password
        cfg["wifi"] = wifi
    if args.han_device:
        han = dict(cfg.get("han", {}))
        devices = list(han.get("devices", []))
        for spec in args.han_device:
            d_eui, _, d_type = spec.partition(":")
            devices.append({"eui": d_eui, "type": d_type})
        han["devices"] = devices
        cfg["han"] = han
    try:
        config.validate(json.loads(json.dumps(cfg)))
    except config.ConfigError as exc:
        raise CliError("config refused: %s" % exc)
    try:
        if args.envelope_key_file:
            with open(args.envelope_key_file, "rb") as f:
                key = f.read()
        else:
            key = mt.envelope_key(args.state_dir, eui, create=True)
    except OSError as exc:
        raise CliError("cannot read the envelope key: %s" % exc)
    if len(key) != 32:
        raise CliError("envelope key must be 32 bytes, not %d" % len(key))
    try:
        files = mt.gateway_files(args.state_dir, eui, cfg, key)
    except Exception as exc:  # certificate issue problems
        raise CliError("cannot issue the gateway certificate: %s" % exc)
    return files, cfg


# Order matters: the config goes in last.
ORDER = ("/certs/ca.der", "/certs/gateway.der", "/certs/gateway.key.der", "/secrets/envelope.key", "/config.json")


def write(port, files, root="", mpremote=None):
    """Copy `files` to the board under .tmp names, verify, then rename into place."""
    from host_tools.emuboard import BoardError, mpremote as run_mpremote
    mpremote = mpremote or run_mpremote
    paths = [p for p in ORDER if p in files] + sorted(p for p in files if p not in ORDER)
    dirs = sorted({root + os.path.dirname(p) for p in paths if os.path.dirname(p) != "/"})
    try:
        mpremote(port, ["exec", "import os\nfor d in %r:\n    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n" % dirs])
        with tempfile.TemporaryDirectory() as tmp:
            args = []
            for i, path in enumerate(paths):
                local = os.path.join(tmp, "f%d" % i)
                with open(local, "wb") as f:
                    f.write(files[path])
                if args:
                    args.append("+")
                args += ["fs", "cp", local, ":" + root + path + ".tmp"]
            mpremote(port, args, timeout=120)
        want = {root + p: hashlib.sha256(files[p]).hexdigest() for p in paths}
        check = ("import hashlib, binascii\n"
                 "for p in %r:\n"
                 "    h = hashlib.sha256()\n"
                 "    with open(p + '.tmp', 'rb') as f:\n"
                 "        while True:\n"
                 "            b = f.read(512)\n"
                 "            if not b:\n"
                 "                break\n"
                 "            h.update(b)\n"
                 "    print(p, binascii.hexlify(h.digest()).decode())\n" % [root + p for p in paths])
        got = dict(line.split() for line in mpremote(port, ["exec", check]).splitlines() if line.strip())
        bad = [p for p in want if got.get(p) != want[p]]
        if bad:
            raise CliError("read-back mismatch on the board for %s; nothing renamed" % ", ".join(bad))
        rename = ("import os\n"
                  "for p in %r:\n"
                  "    try:\n"
                  "        os.rename(p + '.tmp', p)\n"
                  "    except OSError:\n"
                  "        os.remove(p)\n"  # filesystems that refuse to rename over a file
                  "        os.rename(p + '.tmp', p)\n"
                  "print('PROVISIONED')\n" % [root + p for p in paths])
        if "PROVISIONED" not in mpremote(port, ["exec", rename]):
            raise CliError("the board did not confirm the renames")
    except BoardError as exc:
        raise CliError(str(exc))
    return paths


def run(args):
    files, cfg = build(args)
    if args.dry_run:
        for p in ORDER:
            print("%s %d bytes" % (args.root + p, len(files[p])))
        print(json.dumps(cfg, indent=1))
        return 0
    paths = write(args.port, files, args.root)
    for p in paths:
        print("wrote %s%s (%d bytes)" % (args.root, p, len(files[p])))
    print("provisioned gateway %s for broker %s:%s" % (cfg["gateway"], cfg["broker"].get("host"), cfg["broker"].get("port")))
    return 0
