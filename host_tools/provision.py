"""Write a gateway's config, certificate, key and envelope key onto its flash
(docs/config.md), atomically: what `ppmid provision` runs.

Everything is built and validated on the host first (ppmid.config.validate), then copied
with mpremote under temporary names (NAME.tmp) and only then renamed into place, the
config last: a board interrupted half-way keeps its previous, complete set (or none) and
never a config that points at missing certificates. The copy is read back (SHA-256) before
the renames. Works on the emulated board (`ppmid board start`) and a real ESP32: mpremote
`resume` is used so the board is not soft-reset.
"""
import argparse
import hashlib
import json
import os
import tempfile

from host_tools import board_scripts, boards
from host_tools.errors import ToolError
from host_tools.ports import PortLock


class ProvisionError(ToolError):
    """A config, key or certificate refused, or a board that did not take the files."""

    code = "E_PROVISION"


# Roles the issue names, and what each may send when the config does not say: the
# supplier and the engineer a command profile (our reading of which use cases each
# sends), the DUIS user roles the codes DUIS makes them eligible for
# (firmware/ppmid/gbcs/eligibility.py, docs/security.md "Roles from DUIS").
# Any other role needs --role-profile ROLE=PROFILE (or a list of codes in --config).
DEFAULT_ROLE_PROFILES = {"supplier": "prepay", "engineer": "hht",
                         "import-supplier": "duis:IS", "export-supplier": "duis:ES", "gas-supplier": "duis:GS",
                         "electricity-distributor": "duis:ED", "gas-transporter": "duis:GT",
                         "other-user": "duis:OU"}


class _UserToken(argparse.Action):
    # --user, --role, --originators and --role-profile in the order given: a --role or
    # --originators belongs to the --user before it (read by split_user_tokens)
    def __call__(self, parser, namespace, values, option_string=None):
        tokens = list(getattr(namespace, "user_tokens", None) or [])
        tokens.append((option_string, values))
        setattr(namespace, "user_tokens", tokens)


def add_user_arguments(p):
    """--user NAME --role ROLE --originators ORIG[,ORIG] (repeatable, in that order), the
    older --user NAME:ROLE:ORIG[,ORIG], and --role-profile ROLE=PROFILE (also spelled
    --role ROLE=PROFILE): shared by `ppmid provision` and `ppmid users push`."""
    p.set_defaults(user_tokens=[])
    p.add_argument("--user", action=_UserToken, metavar="NAME",
                   help="a DCC User with its own envelope key (STATE_DIR/keys/EUI.users/NAME.key, created if absent); "
                        "give its --role and --originators after it; repeatable (NAME:ROLE:ORIG[,ORIG] also works)")
    p.add_argument("--role", action=_UserToken, metavar="ROLE",
                   help="the role of the --user before it (supplier = prepay, engineer = hht unless "
                        "--role-profile says otherwise); ROLE=PROFILE defines a role, as --role-profile")
    p.add_argument("--originators", action=_UserToken, metavar="ORIG[,ORIG]",
                   help="the GBCS originator ids (EUI-64) the --user before it may send as")
    p.add_argument("--public-key", action=_UserToken, metavar="FILE",
                   help="the --user before it signs with ECDSA P-256: its public key (PEM; a private key "
                        "file gives its public half) goes into the config, no envelope key is made for it")
    p.add_argument("--role-profile", action=_UserToken, metavar="ROLE=PROFILE",
                   help="a role and the command profile it may send (all, prepay, hht, or a DUIS role: duis:IS duis:ES duis:GS duis:ED duis:GT duis:OU); repeatable")


def split_user_tokens(tokens):
    """(user specs [{"name", "role", "originators"}], ["ROLE=PROFILE"]) from the options
    in order, or ProvisionError saying what is missing."""
    users, roles = [], []
    for opt, val in tokens:
        if opt == "--role-profile" or (opt == "--role" and "=" in val):
            roles.append(val)
        elif opt == "--user":
            if ":" in val:
                parts = val.split(":")
                if len(parts) != 3:
                    raise ProvisionError("--user %r: use NAME --role ROLE --originators ORIG[,ORIG] "
                                         "(or NAME:ROLE:ORIGINATOR[,ORIGINATOR...])" % val)
                users.append({"name": parts[0], "role": parts[1], "originators": parts[2]})
            else:
                users.append({"name": val})
        elif not users:
            raise ProvisionError("%s %s: give --user NAME first" % (opt, val))
        else:
            users[-1][{"--role": "role", "--public-key": "public_key"}.get(opt, "originators")] = val
    for u in users:
        missing = [o for o in ("role", "originators") if o not in u]
        if missing:
            raise ProvisionError("--user %s needs %s (or NAME:ROLE:ORIGINATOR[,ORIGINATOR...])"
                                 % (u["name"], " and ".join("--" + m for m in missing)))
    return users, roles


def merge_users(base, users, roles):
    """The users section `base` with these specs and role definitions added; a role used
    but not defined gets its DEFAULT_ROLE_PROFILES profile when it has one."""
    u = dict(base or {})
    u_keys, u_roles = dict(u.get("keys") or {}), dict(u.get("roles") or {})
    for spec in roles:
        role, sep, profile = spec.partition("=")
        if not sep:
            raise ProvisionError("--role-profile %r: use ROLE=PROFILE (e.g. supplier=prepay)" % spec)
        u_roles[role] = profile
    for spec in users:
        role = spec["role"]
        if role not in u_roles and role in DEFAULT_ROLE_PROFILES:
            u_roles[role] = DEFAULT_ROLE_PROFILES[role]
        u_keys[spec["name"]] = {"role": role, "originators": [o.upper() for o in spec["originators"].split(",")]}
        if spec.get("public_key"):
            from host_tools.keys import KeyFileError
            from host_tools.p256_envelope import public_point_hex
            try:
                u_keys[spec["name"]]["public_key"] = public_point_hex(spec["public_key"])
            except KeyFileError as exc:
                raise ProvisionError("--public-key of %s: %s" % (spec["name"], exc))
    u["keys"], u["roles"] = u_keys, u_roles
    return u


def han_device(spec):
    """--han-device EUI:TYPE[:NWK[:ENDPOINT]] -> a han.devices entry (the config checks the
    values). NWK, the device's network address (0x4A21 or 18977), and ENDPOINT say where
    top-ups go: an ESME without NWK takes none (docs/utrn.md)."""
    parts = spec.split(":")
    d = {"eui": parts[0], "type": parts[1] if len(parts) > 1 else ""}
    try:
        if len(parts) > 4:
            raise ValueError
        if len(parts) > 2:
            d["nwk"] = int(parts[2], 0)
        if len(parts) > 3:
            d["endpoint"] = int(parts[3], 10)
    except ValueError:
        raise ProvisionError("--han-device %r: EUI:TYPE[:NWK[:ENDPOINT]], NWK the device's network address "
                             "(0x4A21 or 18977), ENDPOINT a number (1 to 240)" % spec)
    return d


def build(state_dir, gateway, config_file=None, broker_host=None, broker_port=None, server_hostname=None,
          ssid=None, password=None, han_devices=(), envelope_key_file=None, users=(), roles=(), user_tokens=(),
          install_code=None):
    """(files {flash path: bytes}, config dict) or ProvisionError. han_devices: "EUI:TYPE[:NWK[:ENDPOINT]]"
    strings; envelope_key_file: None = STATE_DIR/keys/EUI.key, created if absent; users:
    "NAME:ROLE:ORIGINATOR[,ORIGINATOR...]" strings (a key each, STATE_DIR/keys/EUI.users/
    NAME.key, created if absent); roles: "ROLE=PROFILE" strings; user_tokens: the
    options of add_user_arguments in order (docs/security.md); install_code: the Zigbee
    module's install code (bytes, CRC included, checked by host_tools.device_log) for
    config zigbee.install_code (docs/zigbee.md "Commissioning")."""
    from host_tools import mqtt_tools as mt
    from host_tools.broker import BrokerError, gateway_identity
    from ppmid import config
    try:
        eui = gateway_identity(gateway)
    except BrokerError as exc:
        raise ProvisionError(str(exc))
    cfg = {}
    if config_file:
        try:
            with open(config_file) as f:
                cfg = json.load(f)
        except (OSError, ValueError, RecursionError) as exc:
            raise ProvisionError("cannot read --config %s: %s" % (config_file, exc or "nested too deeply"))
        if not isinstance(cfg, dict):
            raise ProvisionError("--config must hold a JSON object")
    info = {}
    if os.path.exists(os.path.join(state_dir, "broker.json")):
        try:
            info = mt.broker_info(state_dir)
        except RuntimeError as exc:
            raise ProvisionError(str(exc))
    elif not os.path.exists(os.path.join(state_dir, "ca.pem")):
        raise ProvisionError("no broker state in %s: run `ppmid broker start --state-dir %s` first" % (state_dir, state_dir))
    for name in ("broker", "wifi", "han"):  # merged with the options below: must be objects
        if name in cfg and not isinstance(cfg[name], dict):
            raise ProvisionError("config refused: %s must be an object, not %r" % (name, cfg[name]))
    if "devices" in cfg.get("han", {}) and not isinstance(cfg["han"]["devices"], list):
        raise ProvisionError("config refused: han.devices must be a list")
    cfg["version"] = 1
    cfg["gateway"] = eui
    broker = dict(cfg.get("broker", {}))
    for key, val in (("host", broker_host or info.get("host")), ("port", broker_port or info.get("port")),
                     ("server_hostname", server_hostname or info.get("server_hostname"))):
        if val is not None:
            broker[key] = val
    cfg["broker"] = broker
    if ssid is not None or password is not None:
        wifi = dict(cfg.get("wifi", {}))
        if ssid is not None:
            wifi["ssid"] = ssid
        if password is not None:
            wifi["password"] = password
        cfg["wifi"] = wifi
    if han_devices:
        han = dict(cfg.get("han", {}))
        devices = list(han.get("devices", []))
        for spec in han_devices:
            devices.append(han_device(spec))
        han["devices"] = devices
        cfg["han"] = han
    if install_code is not None:
        if "zigbee" in cfg and not isinstance(cfg["zigbee"], dict):
            raise ProvisionError("config refused: zigbee must be an object, not %r" % (cfg["zigbee"],))
        cfg["zigbee"] = dict(cfg.get("zigbee") or {}, install_code=bytes(install_code).hex().upper())
    specs, role_defs = split_user_tokens(list(user_tokens) + [("--user", s) for s in users]
                                         + [("--role-profile", r) for r in roles])
    if specs or role_defs:
        cfg["users"] = merge_users(cfg.get("users"), specs, role_defs)
    # the last signed users update this gateway applied (ppmid users push): a gateway
    # provisioned again keeps it, so no update it refused as old becomes new again
    from host_tools.users_registry import read_registry
    seq = read_registry(state_dir, eui)["sequence"]
    if seq:
        cfg["users"] = dict(cfg.get("users") or {}, sequence=seq)
    try:
        config.validate(json.loads(json.dumps(cfg)), strict=True)
    except config.ConfigError as exc:
        raise ProvisionError("config refused: %s" % exc)
    # what validate cannot see and boot refuses with every link stopped (a repair over USB)
    from host_tools.p256_envelope import off_curve_user
    bad = off_curve_user(cfg.get("users"))
    if bad is not None:
        raise ProvisionError("config refused: users.keys.%s.public_key is not a point of P-256" % bad)
    try:
        if envelope_key_file:
            with open(envelope_key_file, "rb") as f:
                key = f.read()
        else:
            key = mt.envelope_key(state_dir, eui, create=True)
    except OSError as exc:
        raise ProvisionError("cannot read the envelope key: %s" % exc)
    if len(key) != 32:
        raise ProvisionError("envelope key must be 32 bytes, not %d" % len(key))
    try:
        files = mt.gateway_files(state_dir, eui, cfg, key)
    except Exception as exc:  # certificate issue problems
        raise ProvisionError("cannot issue the gateway certificate: %s" % exc)
    return files, cfg


def remember_users(state_dir, cfg):
    """After a provision: what the gateway now has, for the next `ppmid users push`."""
    from host_tools.users_registry import write_registry
    users = dict(cfg.get("users") or {"keys": {}, "roles": {}})
    seq = users.pop("sequence", 0)
    write_registry(state_dir, cfg["gateway"], seq, users)


# Order matters: the config goes in last.
ORDER = ("/certs/ca.der", "/certs/gateway.der", "/certs/gateway.key.der", "/secrets/envelope.key",
         "/secrets/config.key", "/config.json")


def write(port, files, root="", mpremote=None):
    """Copy `files` to the board under .tmp names, verify, then rename into place.
    Raises BoardError (mpremote failed), ProvisionError (the board did not take them) or
    PortBusy (another tool has the port: held from the first step to the renames)."""
    with PortLock(port):
        return _write(port, files, root, mpremote or boards.mpremote)


def _write(port, files, root, mpremote):
    paths = [p for p in ORDER if p in files] + sorted(p for p in files if p not in ORDER)
    dirs = sorted({root + os.path.dirname(p) for p in paths if os.path.dirname(p) != "/"})
    mpremote(port, ["exec", board_scripts.with_call("provision_steps.py", "_mkdirs", dirs)])
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
    staged = [root + p for p in paths]
    out = mpremote(port, ["exec", board_scripts.with_call("provision_steps.py", "_hash_staged", staged)])
    got = dict(line.split() for line in out.splitlines() if line.strip())
    bad = [p for p in want if got.get(p) != want[p]]
    if bad:
        raise ProvisionError("read-back mismatch on the board for %s; nothing renamed" % ", ".join(bad))
    out = mpremote(port, ["exec", board_scripts.with_call("provision_steps.py", "_rename_staged", staged)])
    if "PROVISIONED" not in out:
        raise ProvisionError("the board did not confirm the renames")
    return paths
