"""Bad input a real user gives to every `ppmid` command, each case in a fresh
`python -m host_tools.cli` process; flags what does not end in one clear error line.

    python tests/cli_sweep.py [-j 2] [--only WORD] [--show]

A case passes when its output holds no "Traceback", it ends within 60 s, it exits non-zero
(1 for what a command checks, 2 for a usage error, 3 for what the CLI's last line of defence
caught) and its last stderr line is `ppmid: E_CODE: sentence` other than E_INTERNAL (a bug,
by its own words). Also passing: a quiet exit 130 after Ctrl-C; a checking command's verdict
with its code on stdout (gbcs decode/check, utrn check); exit 0 where the case says why
(`exit0`: not bad input after all, e.g. `board status` shows whatever board.json holds).
Nothing here flashes hardware or leaves loopback: ports are paths in a temp folder,
/dev/null or /dev/ptmx; brokers are ports nobody listens on; a case that starts something
after all is stopped with Ctrl-C to its process group at the timeout, then SIGKILL.
Prints a table (case, exit status, verdict, last line) and exits 1 when any case is flagged.
tests/test_cli_bad_input.py keeps what it found fixed; run this again when a command or an
input file format is added or changed (about a minute on this 2-core host).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GW = "00DB1234567890A4"
LINE_RE = re.compile(r"^ppmid: (E_[A-Z0-9_]+): \S.*")


def fixtures(d):
    """Bad files of every kind in folder d; returns {name: path}."""
    f = {}

    def put(name, data):
        path = os.path.join(d, name)
        with open(path, "wb") as fh:
            fh.write(data if isinstance(data, bytes) else data.encode())
        f[name] = path
        return path

    put("empty", b"")
    put("garbage", os.urandom(64))
    put("latin1", "caf\xe9 00DD\n".encode("latin-1"))
    put("truncated.pem", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n")
    put("cert_as_key.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    put("garbage.der", bytes(range(48)))
    put("list.json", "[]")
    put("string.json", '"x"')
    put("number.json", "5")
    put("bad.json", "{bad")
    put("types.json", json.dumps({"gateway": 5, "mqtt": "x", "zigbee": [1], "relay": None}))
    put("trace_types.jsonl", '{"at_ms": "soon", "id": 5, "gbcs": 7}\n')
    put("trace_list.jsonl", "[1, 2]\n")
    put("trace_oddhex.jsonl", '{"at_ms": 0, "id": "a1", "gbcs": "dd0"}\n')
    put("trace_neg.jsonl", '{"at_ms": -5, "id": "a1", "gbcs": "dd00"}\n')
    put("trace.jsonl", '{"at_ms": 0, "id": "a1", "gbcs": "dd00"}\n')
    put("oddhex.txt", "DD0\n")
    put("key31", b"k" * 31)
    put("key32", b"k" * 32)
    put("ic_object.json", json.dumps({"gateway": GW, "zigbee": {"install_code": {"a": 1}}}))
    put("ic_float.json", json.dumps({"gateway": GW, "zigbee": {"install_code": 5.5}}))
    put("users_pub_off_curve.json", json.dumps({"gateway": GW, "users": {"keys": {"a": {
        "role": "r", "originators": [GW], "public_key": "04" + "00" * 64}}, "roles": {"r": "all"}}}))
    put("users_types.json", json.dumps({"users": 5}))
    put("users_list.json", json.dumps([1, 2]))
    put("devlog_bad.jsonl", "{bad\n")
    put("devlog_types.jsonl", json.dumps({"eui64": 5, "install_code": []}) + "\n")
    # a good P-256 key (the operator's, a DCC User's) and a prepared broker state dir nobody
    # listens for, so that the cases after them reach the option under test
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    put("p256.pem", ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    sys.path.insert(0, ROOT)
    from host_tools.broker import Broker
    state = os.path.join(d, "broker")
    Broker(state, gateways=[GW], users=["test"]).prepare()
    os.makedirs(os.path.join(state, "keys"), exist_ok=True)
    with open(os.path.join(state, "keys", GW + ".key"), "wb") as fh:
        fh.write(b"k" * 32)
    with open(os.path.join(state, "broker.json"), "w") as fh:
        json.dump({"host": "127.0.0.1", "port": 9}, fh)  # discard: nobody listens there
    f["broker"] = state
    os.mkdir(os.path.join(d, "dir"))
    f["dir"] = os.path.join(d, "dir")
    f["missing"] = os.path.join(d, "missing", "x")
    # half-written state dirs
    for name, files in (("board_trunc", {"board.json": '{"uarts": {"zig'}),
                        ("board_types", {"board.json": json.dumps({"uarts": 5, "pid": "x"})}),
                        ("board_list", {"board.json": "[]"}),
                        ("board_pid", {"board.json": json.dumps({"pid": -1, "running": True, "supervisor_pid": -1})}),
                        ("broker_trunc", {"broker.json": '{"host": "127.0.0.1", "po'}),
                        ("broker_types", {"broker.json": json.dumps({"host": 5, "port": "x", "pid": "y"})}),
                        ("broker_port", {"broker.json": json.dumps({"host": "127.0.0.1", "port": 99999})}),
                        ("flash_short", {"flash.img": b"\xff" * 1000}),
                        ("console_bin", {"console.log": b"\xff\xfe boot\n", "board.json": "{}"}),
                        ("release_bad", {"manifest.json": "{bad"}),
                        ("release_types", {"manifest.json": json.dumps({"version": 5, "files": "x"})}),
                        ("release_empty", {})):
        sd = os.path.join(d, name)
        os.mkdir(sd)
        for fn, data in files.items():
            with open(os.path.join(sd, fn), "wb") as fh:
                fh.write(data if isinstance(data, bytes) else data.encode())
        f[name] = sd
    # a stopped board's state dir: links and uarts as it left them (at /dev/null here: the
    # kernel hands a stopped board's /dev/pts numbers to other programs, whose they then are)
    sd = os.path.join(d, "board_stopped")
    os.mkdir(sd)
    with open(os.path.join(sd, "board.json"), "w") as fh:
        json.dump({"running": False, "repl": os.devnull, "uarts": {"zigbee": os.devnull, "nfc": os.devnull}}, fh)
    for name in ("repl", "zigbee", "nfc"):
        os.symlink(os.devnull, os.path.join(sd, name))
    f["board_stopped"] = sd
    # the prepared broker state with its broker.json broken: what send meets after the rest
    import shutil
    for name, text in (("trunc", '{"host": "127.0.0.1", "po'), ("types", '{"host": 5, "port": "x"}'),
                       ("port", '{"host": "127.0.0.1", "port": 99999}')):
        sd = os.path.join(d, "prepared_" + name)
        shutil.copytree(f["broker"], sd)
        with open(os.path.join(sd, "broker.json"), "w") as fh:
            fh.write(text)
        f["prepared_" + name] = sd
    return f


def cases(f, tmp):
    """(name, argv, options) for every case; options: stdin bytes, sigint after seconds."""
    out = os.path.join(tmp, "out")
    gw_opts = ["--gateway", GW]
    c = []

    def case(name, *argv, **opts):
        c.append((name, list(argv), opts))

    # board
    case("board status missing dir", "board", "status", "--state-dir", f["missing"])
    case("board status truncated board.json", "board", "status", "--state-dir", f["board_trunc"])
    case("board status board.json wrong types", "board", "status", "--state-dir", f["board_types"],
         exit0="status shows what board.json holds")
    case("board kill board.json pid -1", "board", "kill", "--state-dir", f["board_pid"])
    case("board kill board.json pid a word", "board", "kill", "--state-dir", f["board_types"])
    case("board status board.json a list", "board", "status", "--state-dir", f["board_list"])
    case("board stop truncated board.json", "board", "stop", "--state-dir", f["board_trunc"])
    case("board reset board.json wrong types", "board", "reset", "--state-dir", f["board_types"])
    case("board wifi board.json wrong types", "board", "wifi", "down", "--state-dir", f["board_types"])
    case("board start unknown board", "board", "start", "--board", "nosuch", "--state-dir", os.path.join(tmp, "b1"))
    case("board start bad heap", "board", "start", "--heap", "lots", "--state-dir", os.path.join(tmp, "b2"))
    case("board start flash.img cut short", "board", "start", "--state-dir", f["flash_short"])
    case("board start state dir is a file", "board", "start", "--state-dir", f["empty"])
    case("board bad action", "board", "explode")
    case("deploy port a stopped board's link", "deploy", "--port", os.path.join(f["board_stopped"], "repl"),
         "--board", "emulated")
    case("provision port a stopped board's link", "provision", "--port", os.path.join(f["board_stopped"], "repl"),
         "--gateway", GW, "--state-dir", f["broker"])
    case("ncp-emulator a stopped board", "ncp-emulator", "--state-dir", f["board_stopped"])
    case("ncp-emulator a stopped board's link", "ncp-emulator", "--pty", os.path.join(f["board_stopped"], "zigbee"))
    case("pn532-emulator a stopped board", "pn532-emulator", "--state-dir", f["board_stopped"])
    # deploy / flash (never reach a board: ports that do not exist, --dry-run)
    case("deploy unknown board", "deploy", "--port", f["missing"], "--board", "nosuch", "--dry-run")
    case("deploy board name with a slash", "deploy", "--port", f["missing"], "--board", "../boards", "--dry-run")
    case("deploy port missing", "deploy", "--port", f["missing"], "--board", "emulated")
    case("deploy port a directory", "deploy", "--port", f["dir"], "--board", "emulated")
    case("deploy firmware dir missing", "deploy", "--port", f["missing"], "--board", "emulated",
         "--firmware-dir", f["missing"], "--dry-run")
    case("deploy firmware dir a file", "deploy", "--port", f["missing"], "--board", "emulated",
         "--firmware-dir", f["empty"], "--dry-run")
    case("deploy attempts not a number", "deploy", "--port", f["missing"], "--board", "emulated", "--attempts", "x")
    case("flash firmware missing", "flash", "--port", f["missing"], "--board", "esp32-devkitc",
         "--firmware", f["missing"], "--dry-run")
    case("flash firmware empty", "flash", "--port", f["missing"], "--board", "esp32-devkitc",
         "--firmware", f["empty"], "--dry-run")
    case("flash firmware garbage", "flash", "--port", f["missing"], "--board", "esp32-devkitc",
         "--firmware", f["garbage"], "--dry-run")
    case("flash unknown board", "flash", "--port", f["missing"], "--board", "nosuch", "--firmware", f["garbage"],
         "--dry-run")
    case("flash baud negative", "flash", "--port", f["missing"], "--board", "esp32-devkitc", "--firmware",
         f["garbage"], "--baud", "-1", "--dry-run")
    case("flash port missing (no dry run)", "flash", "--port", f["missing"], "--board", "esp32-devkitc",
         "--firmware", f["garbage"])
    # provision (ports that do not exist)
    base = ["provision", "--port", f["missing"], "--gateway", GW, "--state-dir", f["broker"]]
    case("provision config missing", *base, "--config", f["missing"], "--dry-run")
    case("provision config a directory", *base, "--config", f["dir"], "--dry-run")
    case("provision config not JSON", *base, "--config", f["bad.json"], "--dry-run")
    case("provision config a list", *base, "--config", f["list.json"], "--dry-run")
    case("provision config wrong types", *base, "--config", f["types.json"], "--dry-run")
    case("provision config not UTF-8", *base, "--config", f["latin1"], "--dry-run")
    case("provision config public key off the curve", *base, "--config", f["users_pub_off_curve.json"], "--dry-run")
    case("provision config install code an object", *base, "--config", f["ic_object.json"], "--dry-run")
    case("provision config install code a number", *base, "--config", f["ic_float.json"], "--dry-run")
    case("provision gateway not hex", "provision", "--port", f["missing"], "--gateway", "XYZ", "--state-dir",
         os.path.join(tmp, "prov2"), "--dry-run")
    case("provision broker port out of range", *base, "--broker-port", "99999", "--dry-run")
    case("provision envelope key 31 bytes", *base, "--envelope-key-file", f["key31"], "--dry-run")
    case("provision envelope key a directory", *base, "--envelope-key-file", f["dir"], "--dry-run")
    case("provision public key garbage", *base, "--user", "a", "--role", "supplier", "--originators", GW,
         "--public-key", f["garbage"], "--dry-run")
    case("provision public key truncated PEM", *base, "--user", "a", "--role", "supplier", "--originators", GW,
         "--public-key", f["truncated.pem"], "--dry-run")
    case("provision public key a certificate", *base, "--user", "a", "--role", "supplier", "--originators", GW,
         "--public-key", f["cert_as_key.pem"], "--dry-run")
    case("provision han device malformed", *base, "--han-device", "nonsense", "--dry-run")
    case("provision install code bad", *base, "--install-code", "1234", "--dry-run")
    case("provision device log not JSON", *base, "--install-code", "new", "--device-log", f["devlog_bad.jsonl"],
         "--dry-run")
    case("provision port a silent pty", "provision", "--port", "/dev/ptmx", "--gateway", GW, "--state-dir",
         f["broker"])
    case("provision port missing (no dry run)", "provision", "--port", f["missing"], "--gateway", GW, "--state-dir",
         f["broker"])
    case("provision state dir a file", "provision", "--port", f["missing"], "--gateway", GW, "--state-dir",
         f["empty"], "--dry-run")
    case("provision broker.json truncated", "provision", "--port", f["missing"], "--gateway", GW, "--state-dir",
         f["broker_trunc"], "--dry-run")
    case("provision broker.json wrong types", "provision", "--port", f["missing"], "--gateway", GW, "--state-dir",
         f["broker_types"], "--dry-run")
    # gbcs
    case("gbcs decode missing", "gbcs", "decode", f["missing"])
    case("gbcs decode empty", "gbcs", "decode", f["empty"])
    case("gbcs decode garbage", "gbcs", "decode", f["garbage"])
    case("gbcs decode odd hex", "gbcs", "decode", f["oddhex.txt"])
    case("gbcs decode directory of nothing", "gbcs", "decode", f["dir"])
    case("gbcs decode stdin not UTF-8", "gbcs", "decode", "-", stdin=b"\xff\xfe\n")
    case("gbcs decode --reassemble garbage", "gbcs", "decode", "--reassemble", f["garbage"])
    case("gbcs check config missing", "gbcs", "check", "--config", f["missing"], f["oddhex.txt"])
    case("gbcs check config a list", "gbcs", "check", "--config", f["list.json"], f["oddhex.txt"])
    case("gbcs check config wrong types", "gbcs", "check", "--config", f["types.json"], f["oddhex.txt"])
    case("gbcs check config not UTF-8", "gbcs", "check", "--config", f["latin1"], f["oddhex.txt"])
    case("gbcs check config install code an object", "gbcs", "check", "--config", f["ic_object.json"],
         f["oddhex.txt"])
    case("gbcs pcap garbage in", "gbcs", "pcap", f["garbage"], out + ".pcapng")
    case("gbcs pcap trace wrong types", "gbcs", "pcap", f["trace_types.jsonl"], out + ".pcapng")
    case("gbcs pcap trace a list", "gbcs", "pcap", f["trace_list.jsonl"], out + ".pcapng")
    case("gbcs pcap out in a missing folder", "gbcs", "pcap", f["oddhex.txt"], f["missing"])
    case("gbcs no action", "gbcs")
    # utrn
    case("utrn check letters", "utrn", "check", "abcd")
    case("utrn check 19 digits", "utrn", "check", "7394333345718904331")
    case("utrn check non-ASCII digits", "utrn", "check", "\u0667" * 20)
    case("utrn check --json bad", "utrn", "check", "--json", "12")
    # broker (no start: that would run mosquitto; status/stop/issue on bad state)
    case("broker status missing", "broker", "status", "--state-dir", f["missing"])
    case("broker status broker.json truncated", "broker", "status", "--state-dir", f["broker_trunc"])
    case("broker status broker.json wrong types", "broker", "status", "--state-dir", f["broker_types"],
         exit0="status says running: false")
    case("broker stop broker.json wrong types", "broker", "stop", "--state-dir", f["broker_types"])
    case("broker issue gateway not hex", "broker", "issue", "--state-dir", os.path.join(tmp, "br1"), "--gateway", "zz")
    case("broker issue bad user name", "broker", "issue", "--state-dir", os.path.join(tmp, "br2"), "--user", "a b/c")
    case("broker start port not a number", "broker", "start", "--state-dir", os.path.join(tmp, "br3"), "--port", "x")
    # sign
    case("sign key file missing", "sign", "--gbcs", "DD00", "--key-file", f["missing"], "--out", out)
    case("sign key file a directory", "sign", "--gbcs", "DD00", "--key-file", f["dir"], "--out", out)
    case("sign key 31 bytes", "sign", "--gbcs", "DD00", "--key-file", f["key31"], "--out", out)
    case("sign gbcs odd hex", "sign", "--gbcs", "DD0", "--key-file", f["key32"], "--out", out)
    case("sign gbcs file missing", "sign", "--gbcs-file", f["missing"], "--key-file", f["key32"], "--out", out)
    case("sign trace garbage", "sign", "--trace", f["garbage"], "--key-file", f["key32"], "--out", out)
    case("sign trace wrong types", "sign", "--trace", f["trace_types.jsonl"], "--key-file", f["key32"], "--out", out)
    case("sign trace a list", "sign", "--trace", f["trace_list.jsonl"], "--key-file", f["key32"], "--out", out)
    case("sign trace odd hex", "sign", "--trace", f["trace_oddhex.jsonl"], "--key-file", f["key32"], "--out", out)
    case("sign out a directory", "sign", "--gbcs", "DD00", "--key-file", f["key32"], "--out", f["dir"])
    case("sign out in a missing folder", "sign", "--gbcs", "DD00", "--key-file", f["key32"], "--out", f["missing"])
    case("sign private key garbage", "sign", "--gbcs", "DD00", "--private-key", f["garbage"], "--kid", "a",
         "--out", out)
    case("sign private key truncated PEM", "sign", "--gbcs", "DD00", "--private-key", f["truncated.pem"], "--kid",
         "a", "--out", out)
    case("sign private key a certificate", "sign", "--gbcs", "DD00", "--private-key", f["cert_as_key.pem"], "--kid",
         "a", "--out", out)
    case("sign signature garbage", "sign", "--signing-input-file", f["garbage"], "--signature", f["garbage"],
         "--out", out)
    case("sign signature empty", "sign", "--signing-input-file", f["empty"], "--signature", f["empty"], "--out", out)
    case("sign expires-in huge", "sign", "--gbcs", "DD00", "--key-file", f["key32"], "--expires-in", "1e308",
         "--out", out)
    case("sign id too long", "sign", "--gbcs", "DD00", "--key-file", f["key32"], "--id", "x" * 300, "--out", out)
    case("sign id not ASCII", "sign", "--gbcs", "DD00", "--key-file", f["key32"], "--id", "\u00e9t\u00e9",
         "--out", out)
    # send (no broker: state dirs that are broken; serial ports that are not ports)
    case("send state dir missing", "send", "--state-dir", f["missing"], *gw_opts, "--gbcs", "DD00", "--timeout", "2")
    case("send broker.json truncated", "send", "--state-dir", f["prepared_trunc"], *gw_opts, "--gbcs", "DD00",
         "--timeout", "2")
    case("send broker.json wrong types", "send", "--state-dir", f["prepared_types"], *gw_opts, "--gbcs", "DD00",
         "--timeout", "2")
    case("send broker.json port out of range", "send", "--state-dir", f["prepared_port"], *gw_opts, "--gbcs", "DD00",
         "--timeout", "2")
    case("send broker not listening", "send", "--state-dir", f["broker"], *gw_opts, "--gbcs", "DD00",
         "--timeout", "2")
    case("send user unknown", "send", "--state-dir", f["broker"], *gw_opts, "--gbcs", "DD00", "--user", "nobody",
         "--timeout", "2")
    case("status broker not listening", "status", "--state-dir", f["broker"])
    case("capture broker not listening", "capture", "--state-dir", f["broker"], *gw_opts, "--out", out,
         "--seconds", "1")
    case("replay broker not listening", "replay", "--report", os.path.join(tmp, "r2.json"), "--state-dir",
         f["broker"], *gw_opts, "--settle-s", "1", f["trace.jsonl"])
    case("send serial missing", "send", "--serial", f["missing"], "--gbcs", "DD00", "--key-file", f["key32"])
    case("send serial a directory", "send", "--serial", f["dir"], "--gbcs", "DD00", "--key-file", f["key32"])
    case("send serial a regular file", "send", "--serial", f["empty"], "--gbcs", "DD00", "--key-file", f["key32"],
         "--timeout", "2")
    case("send envelope garbage", "send", "--serial", "/dev/null", "--envelope", f["garbage"])
    case("send envelope empty", "send", "--serial", "/dev/null", "--envelope", f["empty"])
    case("send envelope a directory", "send", "--serial", "/dev/null", "--envelope", f["dir"])
    case("send utrn letters", "send", "--serial", "/dev/null", "--utrn", "abc", "--target", GW, "--key-file",
         f["key32"])
    case("send utrn target not hex", "send", "--serial", "/dev/null", "--utrn", "73943333457189043313",
         "--target", "zz", "--key-file", f["key32"])
    case("send gbcs file a directory", "send", "--serial", "/dev/null", "--gbcs-file", f["dir"], "--key-file",
         f["key32"])
    case("send private key garbage", "send", "--serial", "/dev/null", "--gbcs", "DD00", "--private-key",
         f["garbage"], "--kid", "a")
    case("send timeout not a number", "send", "--serial", "/dev/null", "--gbcs", "DD00", "--timeout", "soon")
    case("send timeout negative", "send", "--serial", "/dev/null", "--gbcs", "DD00", "--key-file", f["key32"],
         "--timeout", "-1")
    case("send id not ASCII", "send", "--serial", "/dev/null", "--gbcs", "DD00", "--key-file", f["key32"],
         "--id", "\u00e9t\u00e9", "--timeout", "2")
    case("send baud huge", "send", "--serial", "/dev/null", "--gbcs", "DD00", "--key-file", f["key32"],
         "--baud", "99999999999", "--timeout", "2")
    # ncp-emulator / pn532-emulator
    case("ncp-emulator state dir missing", "ncp-emulator", "--state-dir", f["missing"])
    case("ncp-emulator board.json truncated", "ncp-emulator", "--state-dir", f["board_trunc"])
    case("ncp-emulator board.json wrong types", "ncp-emulator", "--state-dir", f["board_types"])
    case("ncp-emulator board.json a list", "ncp-emulator", "--state-dir", f["board_list"])
    case("ncp-emulator device log not JSON", "ncp-emulator", "--pty", "/dev/ptmx", "--device-log",
         f["devlog_bad.jsonl"])
    case("ncp-emulator device log wrong types", "ncp-emulator", "--pty", "/dev/ptmx", "--device-log",
         f["devlog_types.jsonl"])
    case("ncp-emulator device log missing", "ncp-emulator", "--pty", "/dev/ptmx", "--device-log", f["missing"])
    case("ncp-emulator ezsp version a word", "ncp-emulator", "--pty", "/dev/ptmx", "--ezsp-version", "new")
    case("ncp-emulator seed huge", "ncp-emulator", "--pty", "/dev/ptmx", "--seed", "1e999")
    case("pn532-emulator state dir missing", "pn532-emulator", "--state-dir", f["missing"])
    case("pn532-emulator board.json truncated", "pn532-emulator", "--state-dir", f["board_trunc"])
    case("pn532-emulator board.json wrong types", "pn532-emulator", "--state-dir", f["board_types"])
    case("pn532-emulator board.json a list", "pn532-emulator", "--state-dir", f["board_list"])
    case("pn532-emulator tag garbage", "pn532-emulator", "--new-pty", "--tag", f["garbage"], "--hold", "1")
    case("pn532-emulator tag empty", "pn532-emulator", "--new-pty", "--tag", f["empty"], "--hold", "1")
    case("pn532-emulator phone a directory", "pn532-emulator", "--new-pty", "--phone", f["dir"], "--hold", "1")
    case("pn532-emulator pty a regular file", "pn532-emulator", "--pty", f["empty"], "--hold", "1")
    case("pn532-emulator link in a missing folder", "pn532-emulator", "--new-pty", "--link", f["missing"],
         "--hold", "1")
    case("pn532-emulator baud zero", "pn532-emulator", "--new-pty", "--baud", "0", "--hold", "1")
    case("pn532-emulator hold negative", "pn532-emulator", "--new-pty", "--hold", "-1")
    # release / update / users / commission
    case("release make-key in a missing folder", "release", "--make-key", f["missing"])
    case("release make-key a directory", "release", "--make-key", f["dir"])
    case("release key garbage", "release", "--board", "emulated", "--key", f["garbage"], "--out",
         os.path.join(tmp, "rel1"))
    case("release key truncated PEM", "release", "--board", "emulated", "--key", f["truncated.pem"], "--out",
         os.path.join(tmp, "rel2"))
    case("release key missing", "release", "--board", "emulated", "--key", f["missing"], "--out",
         os.path.join(tmp, "rel3"))
    case("release unknown board", "release", "--board", "nosuch", "--key", f["p256.pem"], "--out",
         os.path.join(tmp, "rel4"))
    case("release out is a file", "release", "--board", "emulated", "--key", f["p256.pem"], "--out", f["empty"])
    case("release version garbage", "release", "--board", "emulated", "--key", f["p256.pem"], "--out",
         os.path.join(tmp, "rel5"), "--version", "v\u00e9\n1")
    case("release image missing", "release", "--board", "emulated", "--key", f["p256.pem"], "--out",
         os.path.join(tmp, "rel6"), "--version", "1.0.0", "--image", f["missing"])
    case("release firmware dir a file", "release", "--board", "emulated", "--key", f["p256.pem"], "--out",
         os.path.join(tmp, "rel7"), "--firmware-dir", f["empty"])
    case("release seq zero", "release", "--board", "emulated", "--key", f["p256.pem"], "--out",
         os.path.join(tmp, "rel8"), "--seq", "0")
    case("release manifest format 3", "release", "--board", "emulated", "--key", f["p256.pem"], "--out",
         os.path.join(tmp, "rel9"), "--manifest-format", "3")
    case("release manifest format not a number", "release", "--board", "emulated", "--key", f["p256.pem"], "--out",
         os.path.join(tmp, "rel9"), "--manifest-format", "two")
    ubase = ["--state-dir", f["broker"], *gw_opts, "--timeout", "2"]
    case("update release missing", "update", *ubase, "--release", f["missing"])
    case("update release empty folder", "update", *ubase, "--release", f["release_empty"])
    case("update release manifest not JSON", "update", *ubase, "--release", f["release_bad"])
    case("update release manifest wrong types", "update", *ubase, "--release", f["release_types"])
    case("update release a file", "update", *ubase, "--release", f["empty"])
    case("users push key garbage", "users", "push", *ubase, "--key", f["garbage"], "--rotate", "a")
    case("users push key missing", "users", "push", *ubase, "--key", f["missing"], "--rotate", "a")
    case("users push users file not JSON", "users", "push", *ubase, "--key", f["p256.pem"], "--users", f["bad.json"])
    case("users push users file wrong types", "users", "push", *ubase, "--key", f["p256.pem"], "--users",
         f["users_types.json"])
    case("users push users file a list", "users", "push", *ubase, "--key", f["p256.pem"], "--users",
         f["users_list.json"])
    case("users push users file not UTF-8", "users", "push", *ubase, "--key", f["p256.pem"], "--users", f["latin1"])
    case("users push nothing to do", "users", "push", *ubase, "--key", f["p256.pem"])
    case("commission key garbage", "commission", *ubase, "--key", f["garbage"])
    case("commission key a directory", "commission", *ubase, "--key", f["dir"])
    case("commission sequence zero", "commission", *ubase, "--key", f["p256.pem"], "--sequence", "0")
    case("commission broker not listening", "commission", *ubase, "--key", f["p256.pem"])
    # replay
    rbase = ["replay", "--report", os.path.join(tmp, "r.json"), "--serial", "/dev/null", "--envelope-key",
             f["key32"]]
    case("replay trace missing", *rbase, f["missing"])
    case("replay trace a directory", *rbase, f["dir"])
    case("replay trace empty", *rbase, f["empty"])
    case("replay trace garbage", *rbase, f["garbage"])
    case("replay trace not UTF-8", *rbase, f["latin1"])
    case("replay trace wrong types", *rbase, f["trace_types.jsonl"])
    case("replay trace a list per line", *rbase, f["trace_list.jsonl"])
    case("replay trace odd hex", *rbase, f["trace_oddhex.jsonl"])
    case("replay trace negative time", *rbase, f["trace_neg.jsonl"])
    case("replay envelope key 31 bytes", "replay", "--report", os.path.join(tmp, "r.json"), "--serial",
         "/dev/null", "--envelope-key", f["key31"], f["trace.jsonl"])
    case("replay broker URL garbage", "replay", "--report", os.path.join(tmp, "r.json"), "--broker",
         "http://x:y", "--ca", f["garbage"], "--cert", f["garbage"], "--key", f["garbage"], *gw_opts,
         "--envelope-key", f["key32"], f["trace.jsonl"])
    case("replay broker URL port out of range", "replay", "--report", os.path.join(tmp, "r.json"), "--broker",
         "mqtts://127.0.0.1:99999", "--ca", f["garbage"], "--cert", f["garbage"], "--key", f["garbage"], *gw_opts,
         "--envelope-key", f["key32"], f["trace.jsonl"])
    case("replay broker.json wrong types", "replay", "--report", os.path.join(tmp, "r.json"), "--state-dir",
         f["broker_types"], *gw_opts, f["trace.jsonl"])
    case("replay pn532 endpoint missing", "replay", "--report", os.path.join(tmp, "r3.json"), "--state-dir",
         f["broker"], *gw_opts, "--pn532", f["missing"], f["trace.jsonl"])
    case("replay pn532 endpoint a regular file", "replay", "--report", os.path.join(tmp, "r3.json"), "--state-dir",
         f["broker"], *gw_opts, "--pn532", f["empty"], f["trace.jsonl"])
    case("replay pn532 endpoint a board.json a list", "replay", "--report", os.path.join(tmp, "r3.json"),
         "--state-dir", f["broker"], *gw_opts, "--pn532", f["board_list"], f["trace.jsonl"])
    case("replay speed zero", *rbase, "--speed", "0", f["trace.jsonl"])
    # emulate (refused before it starts anything)
    ebase = ["emulate", "--state-dir", os.path.join(tmp, "emu")]
    case("emulate trace missing", *ebase, "--trace", f["missing"])
    case("emulate trace garbage", *ebase, "--trace", f["garbage"])
    case("emulate trace wrong types", *ebase, "--trace", f["trace_types.jsonl"])
    case("emulate set malformed", *ebase, "--set", "nonsense")
    case("emulate set unknown key", *ebase, "--set", "limits.nosuch=5")
    case("emulate set wrong type", *ebase, "--set", "limits.rate_per_s=fast")
    case("emulate set install code an object", *ebase, "--set", 'zigbee.install_code={"a": 1}')
    case("emulate set install code a list", *ebase, "--set", "zigbee.install_code=[300]")
    case("emulate device log missing", *ebase, "--device-log", f["missing"])
    case("emulate device log not JSON", *ebase, "--device-log", f["devlog_bad.jsonl"])
    case("emulate state dir a file", "emulate", "--state-dir", f["empty"])
    case("emulate uart error rate 2", *ebase, "--uart-error-rate", "2")
    case("emulate broker name bad", *ebase, "--broker-name", "a..b")
    case("emulate report a directory", *ebase, "--report", f["dir"])
    # capture / monitor / status
    case("capture state dir missing", "capture", "--state-dir", f["missing"], *gw_opts, "--out", out)
    case("capture broker.json wrong types", "capture", "--state-dir", f["broker_types"], *gw_opts, "--out", out,
         "--seconds", "1")
    case("capture seconds nan", "capture", "--state-dir", f["broker_port"], *gw_opts, "--out", out, "--seconds", "nan")
    case("monitor port missing", "monitor", f["missing"], "--seconds", "1")
    case("monitor port a directory", "monitor", f["dir"], "--seconds", "1")
    case("monitor port a regular file", "monitor", f["empty"], "--seconds", "1")
    case("monitor grep bad regex", "monitor", "--state-dir", f["console_bin"], "--grep", "(", "--seconds", "1")
    case("monitor console not UTF-8", "monitor", "--state-dir", f["console_bin"], "--from-start", "--seconds", "1",
         exit0="the console's bytes shown, undecodable ones replaced")
    case("monitor state dir without console", "monitor", "--state-dir", f["dir"], "--seconds", "1")
    case("monitor Ctrl-C", "monitor", "--state-dir", f["console_bin"], sigint=2.0, exit0="Ctrl-C ends a follow")
    case("gbcs decode Ctrl-C on stdin", "gbcs", "decode", "-", sigint=2.0, stdin_open=True)
    case("status state dir missing", "status", "--state-dir", f["missing"])
    case("status broker.json truncated", "status", "--state-dir", f["broker_trunc"])
    case("status broker.json wrong types", "status", "--state-dir", f["broker_types"])
    case("status broker.json port out of range", "status", "--state-dir", f["broker_port"])
    case("status broker URL garbage", "status", "--broker", "mqtts://", "--ca", f["garbage"], "--cert",
         f["garbage"], "--key", f["garbage"])
    case("status seconds without watch", "status", "--state-dir", f["missing"], "--seconds", "5")
    # the CLI itself
    case("unknown command", "explode")
    case("non-UTF-8 argument", "gbcs", "decode", os.fsdecode(b"/tmp/\xff\xfe"))
    return c


def run_case(case, tmp):
    name, argv, opts = case
    env = dict(os.environ)
    env.pop("PPMID_DEBUG", None)
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "host_tools.cli"] + argv
    stdin = subprocess.DEVNULL
    if "stdin" in opts or opts.get("stdin_open"):
        stdin = subprocess.PIPE
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if "sigint" in opts:
            time.sleep(opts["sigint"])
            proc.send_signal(signal.SIGINT)
        # (stdin_open: the pipe stays open until here, as a terminal's would, for the Ctrl-C)
        out, err = proc.communicate(opts.get("stdin"), timeout=opts.get("timeout", 60))
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        # a case that started something (a board, a broker): Ctrl-C to its group, then SIGKILL
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        rc = "timeout"
    out = out.decode(errors="replace")
    err = err.decode(errors="replace")
    return name, argv, opts, rc, out, err


def verdict(rc, out, err, opts):
    lines = [l for l in err.splitlines() if l.strip()]
    last = lines[-1] if lines else ""
    if "Traceback" in out + err:
        return "TRACEBACK", last
    if rc == "timeout":
        return "HANGS", last
    if rc == 0:
        if opts.get("exit0"):  # not bad input after all: the reason is the case's
            return "ok", "(exit 0: %s)" % opts["exit0"]
        return "EXIT 0", last
    if rc == 130 and not err.strip():
        return "ok", "(Ctrl-C: quiet, 130)"
    if rc == 1 and not lines and re.search(r"\bE_[A-Z0-9_]+\b", out):
        # a checking command's verdict per message on stdout (gbcs decode/check, utrn check)
        return "ok", "(stdout) " + out.strip().splitlines()[-1]
    m = LINE_RE.match(last)
    if m is None:
        return "NO CODE", last
    if m.group(1) == "E_INTERNAL":
        return "E_INTERNAL", last
    if len(lines) > 1 and not all(l.startswith(("ppmid", "usage:", " ")) for l in lines):
        return "ok?", last
    return "ok", last


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-j", type=int, default=2, help="cases at once (default 2)")
    ap.add_argument("--only", help="only cases whose name holds this word")
    ap.add_argument("--show", action="store_true", help="print the whole output of flagged cases")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ppmid-sweep-") as tmp:
        f = fixtures(tmp)
        todo = [c for c in cases(f, tmp) if not a.only or a.only in c[0]]
        with ThreadPoolExecutor(a.j) as pool:
            results = list(pool.map(lambda c: run_case(c, tmp), todo))
        flagged = 0
        print("| case | exit | verdict | last line |")
        print("|---|---|---|---|")
        for name, argv, opts, rc, out, err in results:
            v, last = verdict(rc, out, err, opts)
            flagged += not v.startswith("ok")
            print("| %s | %s | %s | %s |" % (name, rc, v, last.replace(tmp, "TMP").replace("|", "\\|")[:160]))
            if a.show and not v.startswith("ok"):
                print("    $ ppmid " + " ".join(argv).replace(tmp, "TMP"))
                print("    " + (out + err).replace(tmp, "TMP").replace("\n", "\n    "))
        print("\n%d cases, %d flagged" % (len(results), flagged))
        return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
