"""The app on a board without a usable config: a clear `config-error` status line, the
ready banner (tools keep working), the REPL reachable for `ppmid provision`, and no
reboot loop; once provisioned and reset, the gateway runs."""
import json
import time

import pytest

from host_tools import emulate as E
from host_tools.broker import Broker
from host_tools.emuboard import EmulatedBoard
from host_tools import provision, mqtt_tools as mt


def _provision(board, state, cfg):
    key = mt.envelope_key(state, E.GATEWAY, create=True)
    files = mt.gateway_files(state, E.GATEWAY, cfg, key)
    provision.write(board.repl, files)


def test_config_error_keeps_the_board_up_for_provisioning(tmp_path, deployed_board):
    state = str(tmp_path / "broker")
    Broker(state, gateways=[E.GATEWAY]).prepare()  # certificates only: no broker needed here
    with deployed_board(tmp_path / "board") as b:   # firmware/ deployed, never provisioned
        b.wait_ready(60, since=0)
        text = b.console_text()
        assert "PPMID status: config-error: no config at /config.json" in text
        # a config the firmware refuses (unknown key): written raw, as a broken provisioning would
        b.exec("f = open('/config.json', 'w'); f.write(%r); f.close()" % json.dumps(
            {"gateway": E.GATEWAY, "limits": {"rate_per_sec": 5}}))
        mark = b.mark()
        b.reset()
        b.wait_ready(30, since=mark)
        assert "PPMID status: config-error: unknown limits key 'rate_per_sec'" in b.console_text()[mark:]
        # review r5-1: an install code that is no string (nor a list of byte values) crashed
        # the boot (TypeError or ValueError, a traceback and a reboot at every boot)
        for cfg, said in (({"gateway": E.GATEWAY, "zigbee": {"install_code": {"a": 1}}},
                           "zigbee.install_code must be the code as printed (a string of hex digits), not {'a': 1}"),
                          ({"gateway": E.GATEWAY, "zigbee": {"install_code": [300]}},
                           "zigbee.install_code must be the code as printed (a string of hex digits), not [300]")):
            b.exec("f = open('/config.json', 'w'); f.write(%r); f.close()" % json.dumps(cfg))
            mark = b.mark()
            b.reset()
            b.wait_ready(30, since=mark)
            text = b.console_text()[mark:]
            assert "PPMID status: config-error: " + said in text and "Traceback" not in text, text
        restarts = b.restarts
        # valid config, certificates and key: the gateway comes up (its broker is absent, so
        # MQTT stays down, but the relay and the HAN link start). A han device key earlier
        # firmware took ("label", review r8-2; the tools now refuse it) is dropped with a line
        cfg = {"version": 1, "gateway": E.GATEWAY, "broker": {"host": "127.0.0.1", "port": 1},
               "han": {"devices": [{"eui": E.ESME, "type": "ESME", "label": "kitchen"}]}}
        _provision(b, state, cfg)
        mark = b.mark()
        b.reset()
        b.wait_ready(30, since=mark)
        after = b.console_text()[mark:]
        assert "PPMID status: running: gateway=%s" % E.GATEWAY in after
        assert "PPMID boot: relay free=" in after and "config-error" not in after
        assert "PPMID config: han device %s: unknown key 'label' ignored" % E.ESME in after, after
        assert b.restarts == restarts + 1


@pytest.mark.slow
def test_config_error_is_not_a_reboot_loop(tmp_path):
    with EmulatedBoard(tmp_path / "board") as b:
        b.deploy()
        restarts = b.restarts
        b.wait_for(r"PPMID status: config-error", 5, since=0)
        time.sleep(40)  # longer than the 30 s watchdog: the idle app feeds it
        assert b.restarts == restarts
        assert "watchdog" not in b.console_text()
