"""`ppmid provision` onto the emulated board's LittleFS2 flash through mpremote: the files
docs/config.md lists, byte for byte, no temp names left behind, a second provisioning
replacing the first, and refusals that leave the flash untouched."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

from host_tools.broker import Broker, client_paths
from host_tools.emuboard import EmulatedBoard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GW = "00DB1234567890A0"


def ppmid(*args, timeout=180):
    return subprocess.run([sys.executable, "-c", "import sys; from host_tools.cli import main; sys.exit(main())"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


LIST = ("import os, hashlib, binascii\n"
        "for d in ('/', '/certs', '/secrets'):\n"
        "    for n in sorted(os.listdir(d)):\n"
        "        p = (d.rstrip('/') + '/' + n)\n"
        "        if os.stat(p)[0] & 0x4000:\n"
        "            continue\n"
        "        print(p, binascii.hexlify(hashlib.sha256(open(p, 'rb').read()).digest()).decode())\n")


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _flash(board):
    return dict(line.split() for line in board.exec(LIST).splitlines() if line.strip())


def test_provision_emulated_board(tmp_path):
    state = str(tmp_path / "broker")
    Broker(state, gateways=[GW]).prepare()  # CA and certificates; no broker needed
    with EmulatedBoard(tmp_path / "board") as b:
        r = ppmid("provision", "--port", b.repl, "--gateway", GW.lower(), "--state-dir", state,
                  "--broker-host", "127.0.0.1", "--broker-port", "18883", "--ssid", "home")
        assert r.returncode == 0, r.stdout + r.stderr
        flash = _flash(b)
        paths = client_paths(state, GW)
        key = open(os.path.join(state, "keys", GW + ".key"), "rb").read()
        assert len(key) == 32
        assert flash["/certs/ca.der"] == _sha(open(paths["ca_der"], "rb").read())
        assert flash["/certs/gateway.der"] == _sha(open(paths["der"], "rb").read())
        assert flash["/certs/gateway.key.der"] == _sha(open(paths["key_der"], "rb").read())
        assert flash["/secrets/envelope.key"] == _sha(key)
        assert not [p for p in flash if p.endswith(".tmp")]
        cfg = json.loads(b.exec("print(open('/config.json').read())"))
        assert cfg["gateway"] == GW and cfg["broker"]["port"] == 18883 and cfg["wifi"]["ssid"] == "home"

        # Re-provision with a HAN device: replaces the config, same key (kept on the host).
        r = ppmid("provision", "--port", b.repl, "--gateway", GW, "--state-dir", state,
                  "--broker-port", "18884", "--han-device", "00DB1234567890A1:ESME")
        assert r.returncode == 0, r.stderr
        cfg = json.loads(b.exec("print(open('/config.json').read())"))
        assert cfg["broker"]["port"] == 18884 and cfg["han"]["devices"] == [{"eui": "00DB1234567890A1", "type": "ESME"}]
        before = _flash(b)
        assert before["/secrets/envelope.key"] == _sha(key)

        # Refusals happen on the host: the flash is untouched.
        for bad in (["--gateway", "XYZ"], ["--gateway", GW, "--han-device", "00DB1234567890A1:TOASTER"],
                    ["--gateway", GW, "--broker-port", "70000"]):
            r = ppmid("provision", "--port", b.repl, "--state-dir", state, *bad)
            assert r.returncode == 1, bad
            assert r.stderr.startswith("ppmid: ")
        assert _flash(b) == before


def test_provision_refuses_without_broker_state_or_board(tmp_path):
    r = ppmid("provision", "--port", "/dev/null", "--gateway", GW, "--state-dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "no broker state" in r.stderr
    state = str(tmp_path / "b")
    Broker(state, gateways=[GW]).prepare()
    r = ppmid("provision", "--port", str(tmp_path / "no-such-port"), "--gateway", GW, "--state-dir", state,
              "--broker-port", "1883", timeout=120)
    assert r.returncode == 1 and "mpremote" in r.stderr


def test_provision_refuses_config_sections_of_the_wrong_type(tmp_path):
    state = str(tmp_path / "b")
    Broker(state, gateways=[GW]).prepare()
    cfg = tmp_path / "c.json"
    for bad, what in (({"broker": "x"}, "broker must be an object"), ({"wifi": 5}, "wifi must be an object"),
                      ({"han": {"devices": 5}}, "han.devices must be a list"),
                      ({"broker": {"hots": "h"}}, "unknown broker key")):
        cfg.write_text(json.dumps(bad))
        r = ppmid("provision", "--port", "/dev/null", "--gateway", GW, "--state-dir", state, "--config", str(cfg),
                  "--ssid", "x", "--han-device", "00DB1234567890A0:ESME", "--dry-run")
        assert r.returncode == 1 and what in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)
