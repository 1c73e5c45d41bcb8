"""`ppmid provision --port PORT --gateway EUI --state-dir DIR`: write a gateway's config,
certificate, key and envelope key onto its flash (docs/config.md), atomically
(host_tools.provision does the work and says how)."""
import json

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
    p.add_argument("--han-device", action="append", default=[], metavar="EUI:TYPE",
                   help="a device on this gateway's HAN, e.g. 00DB1234567890A1:ESME; repeatable")
    p.add_argument("--envelope-key-file", help="32-byte envelope key (default: STATE_DIR/keys/EUI.key, created if absent)")
    provision.add_user_arguments(p)  # --user NAME --role ROLE --originators ORIGS, --role-profile (docs/security.md)
    p.add_argument("--root", default="", help="flash mount point on the board (default: /)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the files; nothing is written to the board (on the host, "
                        "the gateway's certificate and envelope key are still created in the "
                        "state dir if missing)")


def run(args):
    files, cfg = provision.build(args.state_dir, args.gateway, config_file=args.config, broker_host=args.broker_host,
                                 broker_port=args.broker_port, server_hostname=args.server_hostname, ssid=args.ssid,
                                 password=args.password, han_devices=args.han_device,
                                 envelope_key_file=args.envelope_key_file, user_tokens=args.user_tokens)
    if args.dry_run:
        for p in list(provision.ORDER) + sorted(p for p in files if p not in provision.ORDER):
            print("%s %d bytes" % (args.root + p, len(files[p])))
        print(json.dumps(cfg, indent=1))
        return 0
    paths = provision.write(args.port, files, args.root)
    provision.remember_users(args.state_dir, cfg)
    for p in paths:
        print("wrote %s%s (%d bytes)" % (args.root, p, len(files[p])))
    print("provisioned gateway %s for broker %s:%s" % (cfg["gateway"], cfg["broker"].get("host"), cfg["broker"].get("port")))
    return 0
