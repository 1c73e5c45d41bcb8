"""The whole product on one host: mosquitto (TLS, ACLs), the emulated board running the
deployed firmware, the NCP + Communications Hub emulator on the board's Zigbee UART, and a
DCC User replaying a command trace through MQTT. `ppmid emulate` and the end-to-end tests
and benchmark use this module (docs/emulate.md).

    with Emulation(state_dir, overrides={"limits": {"rate_per_s": 20}}) as emu:
        rep = emu.replay(lines, chaos=Chaos(kills=2, broker_restarts=1, wifi_drops=1))

State dir layout: the board's own files at the top (board.json, console.log, flash.img,
...; see docs/platform.md), `broker/` (mosquitto state, CA, certificates, envelope keys),
`ch.jsonl` (every GBCS message the emulated CH received or sent).
"""
import binascii
import json
import os
import random
import re
import threading
import time

from host_tools import board_scripts, mpcompat

mpcompat.install()

from ppmid.mqtt.contract import Topics  # noqa: E402  (firmware module, after mpcompat)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(os.path.dirname(ROOT), "shared", "vectors", "gbcs", "rtds-4.5.0")
GATEWAY = "00DB1234567890A4"       # the corpus's PPMID test title
ESME = "00DB1234567890A0"
GSME = "00DB1234567890A1"
DEVICES = {ESME: "ESME", GSME: "GSME", GATEWAY: "PPMID"}
ANSWERING = (ESME, GSME)          # the devices behind the emulated CH (they answer)
EMULATE_DEVICE_LOG = "emulate-device-log.jsonl"  # the CH device log emulate makes afresh each run (not provision's)
HEAP_RE = re.compile(rb"PPMID heap: free=(\d+) min=(\d+)")
STATUS_RE = re.compile(rb"PPMID status: ([^\r\n]*)")

# A few corpus commands (RTDS 4.5.0, addressed to the test ESME/GSME), so that `ppmid
# emulate` has a sample trace even without ../shared: ECS01a/GCS01a-style top-ups and reads.
EMBEDDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_commands.hex")


JOURNAL_WIPE = board_scripts.source("journal_wipe.py")


class EmulateError(Exception):
    """An emulation that cannot start as asked (options, config, a part that did not come up)."""

    code = "E_EMULATE"


def log_default(msg):
    print("emulate: " + msg, flush=True)


# ---- config overrides -----------------------------------------------------------------------
def parse_sets(items):
    """["limits.rate_per_s=5", "han.allow={}"] -> nested dict. Values are JSON when they
    parse as JSON (numbers, true, objects...), strings otherwise."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise EmulateError("--set takes KEY=VALUE (e.g. limits.rate_per_s=5), not %r" % item)
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        d = out
        parts = key.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise EmulateError("--set %s: %s is not a section" % (item, p))
        d[parts[-1]] = value
    return out


def merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# ---- traces --------------------------------------------------------------------------------
def corpus_dir():
    return CORPUS if os.path.isdir(CORPUS) else None


def embedded_commands():
    """The few corpus commands kept in the repo: [bytes]."""
    out = []
    with open(EMBEDDED) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(binascii.unhexlify(line.split()[-1]))
    return out


def sample_trace(interval_ms=1000, corpus=None):
    """The sample trace `ppmid emulate` replays without --trace: the corpus's relayable
    commands to the devices the emulated CH has (host_tools/trace.py), else the embedded
    ones. Every line expects a response."""
    from host_tools import trace as tr
    corpus = corpus if corpus is not None else corpus_dir()
    if corpus:
        lines = tr.build(corpus, interval_ms, devices=DEVICES, include_rejected=False)
        lines = [x for x in lines if x["note"].split(" -> ")[1].split()[0] in ANSWERING]
    else:
        lines = [{"id": "sample-%d" % i, "gbcs": buf, "via": "mqtt", "expect": {"status": "response"}}
                 for i, buf in enumerate(embedded_commands())]
    for i, x in enumerate(lines):
        x["at_ms"] = i * interval_ms
    return lines


def _find_counter(buf):
    """Offset of the 8-byte counter in a GBCS message's transaction id (after 09 CRA)."""
    from ppmid.gbcs import decode
    m = decode(buf)
    needle = b"\x09" + bytes([m.cra]) + bytes(m.counter_bytes) + b"\x08" + bytes(m.originator)
    pos = bytes(buf).find(needle)
    if pos < 0:
        raise ValueError("transaction id not found")
    return pos + 2, m


def renumbered_commands(n, corpus=None, recipients=ANSWERING, start=None):
    """n corpus commands (cycling through every COMMAND to `recipients`), each with its
    transaction counter rewritten so that each (originator, recipient) pair counts up in
    list order: a trace longer than the corpus whose commands all pass anti-replay. Only
    the 8 counter bytes change (the gateway never checks GBCS signatures; the emulated
    CH answers any command). [(name, bytes)]"""
    from host_tools import trace as tr
    corpus = corpus if corpus is not None else corpus_dir()
    pool = []
    if corpus:
        found = tr.corpus_commands(corpus)
    else:  # no ../shared: the few corpus commands kept in the repo, filtered the same way
        found = [("embedded-%d" % i, buf) for i, buf in enumerate(embedded_commands())]
    for name, buf in found:
        try:
            pos, m = _find_counter(buf)
        except Exception:
            continue
        if m.cra == 1 and binascii.hexlify(bytes(m.recipient)).decode().upper() in recipients:
            pool.append((name, buf, pos, bytes(m.originator) + bytes(m.recipient)))
    if not pool:
        raise EmulateError("no corpus commands to build a trace from")
    base = start if start is not None else int(time.time() * 1000) << 8
    nxt = {}
    out = []
    for i in range(n):
        name, buf, pos, pair = pool[i % len(pool)]
        c = nxt.get(pair, base)
        nxt[pair] = c + 1
        b = bytearray(buf)
        b[pos:pos + 8] = c.to_bytes(8, "big")
        out.append((name, bytes(b)))
    return out


def lines_from(commands, interval_ms=50, prefix="c", expect="response"):
    return [{"at_ms": i * interval_ms, "id": "%s%d" % (prefix, i), "gbcs": buf, "via": "mqtt",
             "expect": {"status": expect}} for i, (_, buf) in enumerate(commands)]


# ---- commissioning from the console ---------------------------------------------------------
def commissioning_from_console(text):
    """The report's "commissioning" from the gateway's console text: its "commission: ..."
    steps (zigbee/commission.py), the tunnel opening after a commissioning or a rejoin, and
    state/cbke/error as the last outcome left them (a rejoin or re-commission after a
    commissioning counts: a failed rejoin is "failed" with its code until a later step
    mends it). rejoins/recommissions: how many were asked for."""
    steps = []
    for line in text.splitlines():
        if "commission: " in line:
            steps.append(line.split("commission: ", 1)[1].strip())
        elif "han: tunnel open" in line and steps and (steps[-1] == "commissioned" or steps[-1].startswith("rejoined")):
            steps.append("tunnel open")
    out = {"state": "uncommissioned", "cbke": None, "steps": steps[-40:], "rejoins": 0, "recommissions": 0}
    for st in steps:
        if st == "commissioned" or st.startswith("rejoined"):
            out.update(state="commissioned")
            if st == "commissioned" or out["cbke"] is None:
                out["cbke"] = "ok"    # (a rejoin needs a key establishment completed, maybe at an earlier boot)
            out.pop("error", None)
        elif st.startswith("failed ") or st.startswith("rejoin failed "):
            code = st.split(": ", 1)[0].split()[-1]
            out.update(state="failed", error=code)
            if code.startswith("E_CBKE"):
                out["cbke"] = "failed"
        elif " rejoin asked" in st:
            out["rejoins"] += 1
            out.update(state="rejoining")
            out.pop("error", None)
        elif st.startswith("re-commission: "):
            out["recommissions"] += 1
            out.update(state="uncommissioned", cbke=None)
            out.pop("error", None)
        elif st.startswith("cbke:") and out["state"] != "commissioned":
            out.update(state="cbke", cbke="running")
    return out


# ---- chaos ---------------------------------------------------------------------------------
class Chaos:
    """Faults spread at random moments over a replay: SIGKILL the board, restart the
    broker, drop the Wi-Fi access point, take the HAN away (han_outages; with
    han_key_switch the CH moves to a new network key meanwhile). The UART error rate is
    applied by the NCP emulator for the whole run."""

    def __init__(self, kills=0, broker_restarts=0, wifi_drops=0, seed=None, down_s=(1.0, 4.0), han_outages=0,
                 han_key_switch=False):
        self.kills = kills
        self.broker_restarts = broker_restarts
        self.wifi_drops = wifi_drops
        self.han_outages = han_outages
        self.han_key_switch = han_key_switch
        self.rng = random.Random(seed)
        self.down_s = down_s
        self.done = []      # (t since start when it was over, what)
        self.spans = []     # (t it began, t it was over, what): a drop or restart lasts seconds
        self.errors = []
        self._thread = None
        self._stop = threading.Event()

    def plan(self, duration_s):
        events = ["kill"] * self.kills + ["broker"] * self.broker_restarts + ["wifi"] * self.wifi_drops + \
            ["han"] * self.han_outages
        self.rng.shuffle(events)
        if not events:
            return []
        # one event per slot, at a random moment inside its slot: no two faults pile up
        slot = max(duration_s, 1.0) / len(events)
        return [(i * slot + self.rng.uniform(0.1, 0.8) * slot, e) for i, e in enumerate(events)]

    def start(self, emu, duration_s):
        schedule = self.plan(duration_s)
        self._thread = threading.Thread(target=self._run, args=(emu, schedule), daemon=True, name="chaos")
        self._thread.start()

    def _run(self, emu, schedule):
        t0 = time.monotonic()
        for at, what in schedule:
            if self._stop.wait(max(0.0, t0 + at - time.monotonic())):
                return
            began = round(time.monotonic() - t0, 2)
            try:
                if what == "kill":
                    emu.board.kill()
                elif what == "han":
                    self._han_outage(emu)
                elif what == "broker":
                    emu.broker.stop()
                    time.sleep(self.rng.uniform(*self.down_s))
                    emu.broker.start()
                else:
                    emu.board.wifi(False)
                    time.sleep(self.rng.uniform(*self.down_s))
                    emu.board.wifi(True)
                self.done.append((round(time.monotonic() - t0, 2), what))
                self.spans.append((began, self.done[-1][0], what))
            except Exception as exc:  # noqa: BLE001 - recorded and reported
                self.errors.append("%s: %r" % (what, exc))

    def _han_outage(self, emu):
        # a gateway that commissions comes back by a rejoin (the module does not find the
        # HAN by itself: it may have missed a key switch); a preset module (--commissioned,
        # no install code, so no rejoin) finds it again by itself
        rejoins = bool(emu.commissioning)
        emu.ncp.network_down()
        if self.han_key_switch and rejoins:
            emu.ncp.switch_network_key()
        time.sleep(self.rng.uniform(*self.down_s))
        emu.ncp.network_up(resume=not rejoins)

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(30)


# ---- the emulation -------------------------------------------------------------------------
OPERATOR = "dcc-user-operator"   # the identity `--update` offers releases as

def check_host_name(name):
    """A host name the gateway can be given for its broker: dot-separated labels of
    letters, digits and hyphens (not an address); EmulateError otherwise."""
    import re
    labels = name.rstrip(".").split(".")
    if len(name) > 253 or re.fullmatch(r"[0-9.]+", name) or \
            not all(re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", x) for x in labels):
        raise EmulateError("%r is not a host name (letters, digits, hyphens; labels of 1-63; not an address)" % name)
    return name


class Emulation:
    """Broker + emulated board + NCP/CH emulator + provisioning + deploy. start() returns
    when the gateway is online on the broker (its retained state says so)."""

    def __init__(self, state_dir, board="emulated", gateway=GATEWAY, devices=None, overrides=None, heap=None,
                 uart_error_rate=0.0, baud=115200, log=log_default, deploy=True, corpus=None, ready_timeout=120,
                 fresh_journal=True, nfc=False, gpf_delay_s=None, sntp_hold_s=0.0, wired=False, pcap=None,
                 broker_engine="mosquitto", commissioning=None, ch_time="good", broker_name=None,
                 ezsp_version=13):
        self.state_dir = os.path.abspath(str(state_dir))
        self.broker_engine = broker_engine  # host_tools/broker.py ENGINES
        self.broker_dir = os.path.join(self.state_dir, "broker")
        self.board_name = board
        self.gateway = gateway.upper()
        self.devices = dict(devices or DEVICES)
        self.overrides = overrides or {}
        self.heap = heap
        self.uart_error_rate = uart_error_rate
        self.baud = baud
        self.log = log or (lambda m: None)
        self.do_deploy = deploy
        self.corpus = corpus if corpus is not None else corpus_dir()
        self.ready_timeout = ready_timeout
        self.fresh_journal = fresh_journal
        self.nfc = nfc            # attach the PN532 emulator to the board's NFC UART
        # the wired road on (config "wired"), a laptop's client on the board's wired pty
        self.wired = wired
        self.wired_client = None
        self.gpf_delay_s = gpf_delay_s  # the GSME's answer delay (None: the emulator's default)
        self.sntp_hold_s = sntp_hold_s  # the SNTP server ignores the gateway this long at first
        # how the emulated CH answers the gateway's reads of its clock (ZCL Time cluster):
        # host_tools/ncp_emulator/ch.py TIME_MODES; ncp.set_ch_time changes it later
        self.ch_time = ch_time
        self.pcap_path = pcap     # pcapng of the HAN (CH log) and MQTT traffic (docs/captures.md)
        # None: the emulated module is commissioned already. A dict: it starts with no
        # network and commissions (docs/zigbee.md): "install_code" the gateway's (written by
        # provisioning), "ch_install_code" the one the CH's device log holds for it, or
        # "device_log" a device log file the CH reads instead (host_tools/device_log.py);
        # the module's EUI-64 is then the gateway's (a PPMID's device id is its HAN EUI-64)
        self.commissioning = commissioning
        # the EZSP version the emulated module speaks (NcpEmulator's; from 14 it names each
        # frame's sender EUI-64, and the gateway holds the CH's frames to the trust centre's)
        self.ezsp_version = ezsp_version
        self.device_log_path = None   # the device log the emulated CH read
        self.capture = None       # (PcapWriter, BrokerCapture)
        self.sntp = None
        # the broker given to the gateway by name: a DNS server on loopback answers it
        # (host_tools/dns_server.py), the emulated board's Wi-Fi resolver (docs/emulate.md)
        self.broker_name = broker_name
        self.dns = None
        self.pn532 = None
        self.broker = None
        self.board = None
        self.ncp = None
        self.config = None
        self.key = None
        self.console_start = 0
        self.restarts_at_start = 0

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        return False

    def gateway_config(self, info=None):
        """The config provisioned: the test titles, the broker, then the overrides."""
        from ppmid import config as C
        from host_tools.mqtt_tools import broker_info
        info = info or broker_info(self.broker_dir)
        cfg = {"version": 1, "gateway": self.gateway,
               "broker": {"host": info["host"], "port": info["port"], "server_hostname": info["server_hostname"]},
               "wifi": {"ssid": "emulated", "password": ""},
               # the gateway's clock comes from the emulation's SNTP server on loopback
               "sntp": {"servers": ["127.0.0.1"], "port": self.sntp.port if self.sntp else 123},
               "han": {"devices": [self._device(e, t) for e, t in sorted(self.devices.items())]}}
        if self.wired:
            cfg["wired"] = {"enabled": True}
        if self.broker_name:
            # no dns.servers: the gateway asks the resolver its Wi-Fi gives (the emulated
            # board's: loopback), on the port the emulation's DNS server has
            cfg["broker"]["host"] = self.broker_name
            cfg["dns"] = {"port": self.dns.port if self.dns else 53}
        if self.commissioning:
            cfg["zigbee"] = {"install_code": self.commissioning["install_code"], "channels": [20]}
        cfg = merge(cfg, self.overrides)
        try:
            C.validate(json.loads(json.dumps(cfg)), strict=True)
        except C.ConfigError as exc:
            raise EmulateError("gateway config refused: %s" % exc)
        return cfg

    @staticmethod
    def _device(eui, kind):
        d = {"eui": eui, "type": kind}
        if eui == ESME:
            # the emulated ESME's own HAN node takes top-ups (host_tools/ncp_emulator/esme.py)
            from host_tools.ncp_emulator.esme import ESME_NWK, ESME_ENDPOINT
            d["nwk"] = ESME_NWK
            d["endpoint"] = ESME_ENDPOINT
        return d

    def targets(self):
        """A top-up trace line's "esme" / "gsme" -> the EUI-64 of that meter on this HAN."""
        out = {}
        for e, t in self.devices.items():
            if t in ("ESME", "GSME"):
                out[t.lower()] = e
        return out

    def check_config(self):
        """Refuse bad overrides and a bad device log before anything starts (EmulateError)."""
        if self.commissioning and self.commissioning.get("device_log"):
            # the CH must hold this gateway, with the code it is provisioned with: else the
            # run could only wait for a join the CH refuses
            from host_tools import device_log
            path = self.commissioning["device_log"]
            try:
                code = device_log.install_code_for(path, bytes.fromhex(self.gateway))
            except device_log.DeviceLogError as exc:
                raise EmulateError(str(exc))
            if code.hex().upper() != self.commissioning["install_code"].upper():
                raise EmulateError(str(device_log.DeviceLogError(
                    "device log %s holds another install code for %s than the one it is provisioned with"
                    % (path, self.gateway))))
        return self.gateway_config({"host": "127.0.0.1", "port": 8883, "server_hostname": "ppmid-broker"})

    @staticmethod
    def _read_device_log(path):
        from host_tools import device_log
        try:
            return device_log.read(path)
        except device_log.DeviceLogError as exc:
            raise EmulateError(str(exc))

    def _device_log(self):
        """The emulated CH's device log: the file given, or STATE_DIR/emulate-device-log.jsonl
        made afresh with the gateway's EUI-64 and its install code (--ch-install-code's
        instead when given), as `ppmid provision --install-code` writes it."""
        from host_tools import device_log
        path = self.commissioning.get("device_log")
        if not path:
            # a name only emulate writes: a state dir shared with `ppmid provision` keeps
            # the real device log (device_log.DEFAULT_NAME) it holds there
            path = os.path.join(self.state_dir, EMULATE_DEVICE_LOG)
            if os.path.exists(path):
                os.remove(path)
            code = self.commissioning.get("ch_install_code") or self.commissioning["install_code"]
            device_log.add(path, self.gateway, device_log.parse_install_code(code))
        self.device_log_path = os.path.abspath(path)
        return self._read_device_log(path)

    def start(self):
        self.check_config()
        from host_tools.broker import Broker
        from host_tools.emuboard import EmulatedBoard
        from host_tools.ncp_emulator import NcpEmulator, Faults
        from host_tools import mqtt_tools as mt
        from host_tools import deploy, provision
        os.makedirs(self.state_dir, exist_ok=True)
        from host_tools.sntp_server import SntpServer
        self.sntp = SntpServer(hold_s=self.sntp_hold_s, log=self.log).start()
        if self.broker_name:
            from host_tools.dns_server import DnsServer
            self.dns = DnsServer({self.broker_name: "127.0.0.1"}, log=self.log).start()
        # the operator offering updates has its own identity: the broker makes the
        # certificate's identity the client id, so sharing the replayer's would knock it off
        self.broker = Broker(self.broker_dir, gateways=[self.gateway], users=("dcc-user-test", OPERATOR),
                             engine=self.broker_engine)
        info = self.broker.start()
        self.log("broker (%s) on 127.0.0.1:%d (state %s)" % (self.broker_engine, info["port"], self.broker_dir))
        ch_options = {"time_mode": self.ch_time}
        if self.pcap_path:
            from host_tools import captures, pcap
            writer = pcap.PcapWriter(self.pcap_path)
            self.capture = (writer, captures.BrokerCapture(self.broker_dir, self.gateway, writer).start())
            ch_options["on_record"] = lambda entry: captures.ch_entry(writer, entry)
            self.log("capturing HAN and MQTT traffic to %s" % self.pcap_path)
        self.board = EmulatedBoard(self.state_dir, board=self.board_name, heap=self.heap)
        self.board.start()
        st = self.board.state()
        self.ncp = NcpEmulator(st["uarts"]["zigbee"], baud=self.baud, ezsp_version=self.ezsp_version, log_path=os.path.join(self.state_dir, "ch.jsonl"),
                               corpus_dir=self.corpus, faults=Faults(byte_error_rate=self.uart_error_rate),
                               gpf_delay_s=self.gpf_delay_s, ch_options=ch_options,
                               commissioning=None if not self.commissioning else {
                                   "device_log": self._device_log(), "eui64": bytes.fromhex(self.gateway)})
        self.ncp.start()
        self.log("NCP/CH emulator on %s (ESME %s, GSME %s)" % (st["uarts"]["zigbee"], ESME, GSME))
        if self.nfc:
            from host_tools.pn532_emulator.chip import PN532Emulator
            self.pn532 = PN532Emulator.on_path(st["uarts"]["nfc"]).start()
            self.log("PN532 emulator on %s" % st["uarts"]["nfc"])
        self.config = self.gateway_config()
        if self.dns is not None:
            # SNTP servers given by name (--set sntp.servers=...) are the emulation's too
            import ipaddress
            for host in self.config["sntp"]["servers"]:
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    self.dns.names[host.lower().rstrip(".")] = "127.0.0.1"
        self.key = mt.envelope_key(self.broker_dir, self.gateway, create=True)
        files = mt.gateway_files(self.broker_dir, self.gateway, self.config, self.key)
        provision.write(self.board.repl, files)
        self.log("provisioned gateway %s" % self.gateway)
        if self.fresh_journal:
            # a fresh gateway: no anti-replay counters or commands from an earlier run (the
            # sample trace's expectations assume that, docs/trace.md)
            from host_tools.boards import mpremote
            mpremote(self.board.repl, ["exec", JOURNAL_WIPE])
        mark = self.board.mark()
        if self.do_deploy:
            deploy.deploy(self.board.repl, self.board_name, log=lambda m: self.log("deploy: " + m))
        else:
            self.board.reset()
        self.banner = self.board.wait_ready(self.ready_timeout, since=mark)
        text = self.board.console_bytes()[mark:]
        m = STATUS_RE.search(text)
        if m and m.group(1).startswith(b"config-error"):
            raise EmulateError("the gateway refused its config: %s" % m.group(1).decode())
        self.console_start = mark
        self.restarts_at_start = self.board.restarts
        self.wait_online(self.ready_timeout)
        if self.commissioning:
            self.wait_commissioned(self.ready_timeout, since=mark)
        if self.wired:
            from host_tools.wired import WiredClient
            self.wired_client = WiredClient(st["uarts"]["wired"], log=self.log).open()
            self.log("wired client on %s" % st["uarts"]["wired"])
        if not self.sntp_hold_s:
            # the board boots with its clock unset: commands with an expiry would get
            # E_CLOCK until the first SNTP reply, which comes within a second or so
            self.board.wait_for(r"PPMID clock: set by sntp", 30, since=mark)
        return self

    def wait_online(self, timeout=60):
        """Wait for the retained state topic to say online (the gateway's first connect
        creates its session: commands published before it would be dropped)."""
        from host_tools import mqtt_tools as mt
        got = threading.Event()
        c = mt.paho_client(self.broker_dir, "dcc-user-test")

        def on_message(client, userdata, msg):
            try:
                if json.loads(msg.payload).get("state") == "online":
                    got.set()
            except ValueError:
                pass

        c.on_message = on_message
        mt.connect(c, self.broker_dir)
        c.subscribe(Topics(self.gateway).state, 1)
        try:
            if not got.wait(timeout):
                raise EmulateError("the gateway did not come online on the broker within %ss; console:\n%s"
                                   % (timeout, self.board._tail("console.log")))
        finally:
            c.disconnect()
            c.loop_stop()

    def wait_commissioned(self, timeout, since=0):
        """Wait until the gateway commissioned its module and the CH opened the tunnel, or
        its first attempt failed (it keeps retrying; the report says how it went). Not an
        error when neither comes in time: the replay then shows what a HAN still joining
        does to commands."""
        from host_tools.emuboard import BoardTimeout
        try:
            m = self.board.wait_for(rb"han: tunnel open|commission: failed [^\r\n]*", timeout, since=since)
        except BoardTimeout:
            self.log("commissioning: not done within %ss" % timeout)
            return None
        what = m.group(0).decode("utf-8", "replace")
        self.log("commissioning: " + ("done, tunnel open" if what.startswith("han") else what.split(": ", 1)[1]))
        return what

    def set_uart_error_rate(self, rate):
        """Bit errors on the Zigbee UART, both directions (probability per byte)."""
        self.uart_error_rate = rate
        self.ncp.set_faults(byte_error_rate=rate, byte_error_rate_from_host=rate)

    def stop(self):
        for what, fn in (("wired_client", lambda: self.wired_client.close()),
                         ("pn532", lambda: self.pn532.stop()), ("ncp", lambda: self.ncp.stop()),
                         ("board", lambda: self.board.stop()),
                         ("capture", self._stop_capture),
                         ("broker", lambda: self.broker.stop()), ("sntp", lambda: self.sntp.stop()),
                         ("dns", lambda: self.dns.stop())):
            try:
                if getattr(self, what) is not None:
                    fn()
            except Exception as exc:  # noqa: BLE001 - best effort teardown
                self.log("stopping %s: %r" % (what, exc))

    def _stop_capture(self):
        writer, listener = self.capture
        self.capture = None
        try:
            listener.stop()
        finally:
            writer.close()

    # ---- figures ---------------------------------------------------------------------------
    def commissioning_report(self):
        """{"state", "cbke", "error", "steps", "rejoins", "recommissions"}: the gateway's
        commissioning as its console logged it ("commission: ..." lines) since start(), with
        what the CH's trust centre saw. "preset" when the emulated module started
        commissioned (`--commissioned`)."""
        if not self.commissioning:
            return {"state": "preset", "cbke": None, "steps": []}
        text = self.board.console_bytes()[self.console_start:].decode("utf-8", "replace")
        out = commissioning_from_console(text)
        if self.device_log_path:
            out["device_log"] = self.device_log_path
        tc = self.ncp.commissioning_state()
        if tc is not None:
            out["trust_centre"] = {"events": [list(e) for e in tc["tc_events"][-20:]], "counters": tc["tc_counters"]}
        return out

    def heap_figures(self):
        """{"heap_bytes", "free_min", "peak_used"} from the board's heap lines since start."""
        data = self.board.console_bytes()[self.console_start:]
        mins = [int(m.group(2)) for m in HEAP_RE.finditer(data)]
        size = self.heap_size()
        if not mins:
            return {"heap_bytes": size, "free_min": None, "peak_used": None}
        low = min(mins)
        return {"heap_bytes": size, "free_min": low, "peak_used": size - low if size else None,
                "free_min_pct": round(100.0 * low / size, 1) if size else None}

    def heap_size(self):
        from host_tools.boards import heap_bytes
        try:
            return heap_bytes(self.board.state().get("heap") or "256K")
        except Exception:  # noqa: BLE001
            return None

    def ch_figures(self, lines, meter_since=None):
        """Commands of `lines` delivered to the CH (byte-identical), extra copies; what
        the emulated ESME did with their top-ups since meter_mark() gave meter_since."""
        received = self.ncp.received
        counts = {}
        for m in received:
            counts[m] = counts.get(m, 0) + 1
        delivered = dupes = 0
        mine = set()
        for x in lines:
            if x.get("gbcs") is None:
                continue  # a top-up: it goes to the meter, not through the CH (below)
            b = bytes(x["gbcs"])
            if b in mine:
                continue
            mine.add(b)
            n = counts.get(b, 0)
            if n:
                delivered += 1
                dupes += n - 1
        foreign = sum(n for m, n in counts.items() if m not in mine)
        out = {"delivered_to_ch": delivered, "duplicates_to_ch": dupes, "foreign_to_ch": foreign,
               "ch_received": len(received), "topups": self.meter_topups(lines, meter_since)}
        out.update(execution_figures(lines, self.ncp.executions()))
        return out

    def meter_mark(self):
        esme = self.ncp.ch.esme
        return len(esme.applied), len(esme.rejected)

    def meter_topups(self, lines, since=None):
        """What the emulated ESME did with the top-ups of `lines` (by UTRN) since `since`
        (meter_mark()): credits, refusals, and UTRNs credited more than once in that time
        (must stay 0)."""
        esme = self.ncp.ch.esme
        a0, r0 = since or (0, 0)
        mine = set(x["utrn"] for x in lines if x.get("utrn") is not None)
        applied = [u for u, _ in list(esme.applied)[a0:] if u in mine]
        rejected = [u for u, _ in list(esme.rejected)[r0:] if u in mine]
        return {"applied": len(applied), "rejected": len(rejected),
                "applied_twice": len([u for u in set(applied) if applied.count(u) > 1])}

    # ---- replay ----------------------------------------------------------------------------
    def replayer(self, settle_s=None):
        from host_tools.replay import Replayer, identity_from_state_dir
        host, port, ca, cert, keyfile = identity_from_state_dir(self.broker_dir)
        if settle_s is None:
            settle_s = self.config.get("limits", {}).get("response_timeout_s", 25) + 20
        # persistent session (host_tools.replay): statuses published while a broker
        # restart has us disconnected are kept for us
        return Replayer(host, port, self.gateway, self.key, ca, cert, keyfile, settle_s=settle_s, out=self.log,
                        targets=self.targets())

    def replay(self, lines, chaos=None, settle_s=None, speed=1.0, progress=None):
        """Replay `lines` (docs/trace.md), with optional Chaos; the replay report plus the
        CH, restart and heap figures (docs/emulate.md)."""
        r = self.replayer(settle_s)
        r.speed = speed
        wr = None
        if self.wired_client is not None:
            from host_tools.wired import WiredReplayer
            wr = WiredReplayer(self.wired_client, self.gateway, self.key, out=self.log)
            r.serial = wr.send_line
        r.progress = progress
        road = None
        if self.pn532 is not None and any(x.get("via", "mqtt") in ("nfc-phone", "nfc-tag") for x in lines):
            from host_tools.nfc_road import NfcRoad
            # a phone waits for its result as long as the gateway may take to answer
            wait = self.config.get("limits", {}).get("response_timeout_s", 25) + 15
            road = r.nfc = NfcRoad(self.pn532, r.note, phone_wait_s=wait, log=self.log)
        r.connect()
        duration = max([x["at_ms"] for x in lines] + [0]) / 1000.0 / speed
        restarts0 = self.board.restarts
        ch0 = len(self.ncp.received)
        meter0 = self.meter_mark()
        try:
            if chaos is not None:
                chaos.start(self, max(duration, 2.0))
            rep = r.run(lines)
        finally:
            if chaos is not None:
                chaos.stop()
            if road is not None:
                road.stop()
            r.close()
        # a final broker restart or board kill may still be settling: the figures below
        # are read after the replay's own settle wait
        rep.update(self.ch_figures(lines, meter0))
        rep["ch_received_during"] = len(self.ncp.received) - ch0
        rep["board_restarts"] = self.board.restarts - restarts0
        rep["heap"] = self.heap_figures()
        rep["peak_heap"] = rep["heap"]["peak_used"]
        rep["ncp"] = self.ncp.stats()
        rep["commissioning"] = self.commissioning_report()
        rep["config"] = {"gateway": self.gateway, "limits": self.config.get("limits", {})}
        if wr is not None:
            # what the wire itself said (the statuses above came over MQTT; the wire's
            # result follows within the road's poll period)
            c = self.wired_client
            c.wait_results([i for i in wr.sent if i in rep.get("per_id", {})
                            and (rep["per_id"][i].get("final") or {}).get("status") in ("response", "failed")], 5.0)
            rep["wired"] = dict(c.stats, port=c.port, channel_errors=len(c.channel_errors),
                                results={i: m.get("status") for i, m in c.results.items()})
        if road is not None:
            rep["nfc"] = road.report()
        if chaos is not None:
            rep["chaos"] = {"done": chaos.done, "spans": chaos.spans, "errors": chaos.errors,
                            "uart_error_rate": self.uart_error_rate}
        return rep


def execution_figures(lines, executions):
    """What the emulated meters did with the commands of `lines` (executions: the NCP
    emulator's {(recipient, originator, counter): (received, executed)}): `sent_twice`
    commands reached their meter more than once, `executed_twice` were executed more than
    once (anti-replay makes that 0), `replays_refused` copies the meters refused."""
    from ppmid.gbcs import decode
    sent_twice = executed_twice = refused = 0
    seen = set()
    for x in lines:
        try:
            m = decode(bytes(x["gbcs"]))
            key = (binascii.hexlify(bytes(m.recipient)).decode().upper(),
                   binascii.hexlify(bytes(m.originator)).decode().upper(), m.counter)
        except Exception:  # noqa: BLE001 - a deliberately bad line never reaches a meter
            continue
        if key in seen:
            continue
        seen.add(key)
        received, executed = executions.get(key, (0, 0))
        sent_twice += received > 1
        executed_twice += executed > 1
        refused += received - executed if received > executed else 0
    return {"sent_twice": sent_twice, "executed_twice": executed_twice, "replays_refused": refused}


def table(rep):
    """The replay table plus the emulation's own rows."""
    from host_tools.replay import table as replay_table
    rows = [("delivered to CH", rep.get("delivered_to_ch")), ("duplicates to CH", rep.get("duplicates_to_ch")),
            ("sent twice to a meter", rep.get("sent_twice")), ("executed twice", rep.get("executed_twice")),
            ("replays refused", rep.get("replays_refused")), ("board restarts", rep.get("board_restarts"))]
    h = rep.get("heap") or {}
    if h.get("free_min") is not None:
        rows.append(("peak heap used", "%d of %d bytes (min free %d, %s%%)" % (
            h["peak_used"], h["heap_bytes"], h["free_min"], h.get("free_min_pct"))))
    c = rep.get("commissioning")
    if c and c.get("state") != "preset":
        rows.append(("commissioning", "%s (cbke %s%s, %d steps)" % (
            c["state"], c.get("cbke") or "not reached", ", " + c["error"] if c.get("error") else "", len(c["steps"]))))
    if rep.get("chaos"):
        c = rep["chaos"]
        rows.append(("faults", "%s; UART error rate %s" % (", ".join("%s@%ss" % (w, t) for t, w in c["done"]) or "none",
                                                           c["uart_error_rate"])))
        if c["errors"]:
            rows.append(("fault errors", "; ".join(c["errors"])))
    w = 24
    return replay_table(rep) + "\n" + "\n".join("%s  %s" % (k.ljust(w), v) for k, v in rows)


# ---- an application update during the replay (`ppmid emulate --update`, docs/update.md) ----
UPDATE_KINDS = ("good", "bad-signature", "crash-at-boot")


def update_key(state_dir):
    """(path, public key hex) of the emulation's operator key, made once in STATE_DIR/update/."""
    from host_tools import update as U
    d = os.path.join(os.path.abspath(str(state_dir)), "update")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "operator.pem")
    if not os.path.exists(path):
        return path, U.make_key(path)
    return path, U.public_hex(U.load_key(path))


def update_overrides(state_dir):
    """The config the gateway needs to take updates signed with the emulation's key."""
    _, pub = update_key(state_dir)
    return {"update": {"public_key": pub, "probation_boots": 2, "probation_s": 60}}


def next_version(v):
    parts = [int(p) for p in v.split(".")]
    parts[-1] += 1
    return ".".join(str(p) for p in parts)




class UpdateRun:
    """Builds one release of this tree (kind: good, bad-signature = signed with another
    key, crash-at-boot = its app raises at import) and offers it to the emulation's gateway
    in a thread, beside the replay; `report` is then the report's "update"."""

    def __init__(self, emu, kind, delay_s=1.0, log=None):
        if kind not in UPDATE_KINDS:
            raise EmulateError("--update must be one of %s" % ", ".join(UPDATE_KINDS))
        self.emu = emu
        self.kind = kind
        self.delay_s = delay_s
        self.log = log or (lambda m: None)
        self.report = None
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True, name="update")
        self._thread.start()
        return self

    def join(self, timeout=600):
        if self._thread is not None:
            self._thread.join(timeout)
        if self.report is None:
            self.report = {"result": None, "error": {"code": "E_UPDATE_TIMEOUT", "message": "no result within %ss" % timeout}}
        return self.report

    def _release(self, work, before):
        import shutil
        from host_tools import update as U
        from host_tools.boards import FIRMWARE_DIR
        key, _ = update_key(self.emu.state_dir)
        firmware = FIRMWARE_DIR
        if self.kind == "bad-signature":
            key = os.path.join(work, "not-the-operator.pem")
            U.make_key(key)
        elif self.kind == "crash-at-boot":
            firmware = os.path.join(work, "firmware")
            shutil.copytree(FIRMWARE_DIR, firmware, ignore=shutil.ignore_patterns("__pycache__"))
            with open(os.path.join(firmware, "ppmid", "app.py"), "a") as f:
                f.write("\nraise RuntimeError('ppmid emulate --update crash-at-boot: this build raises at import')\n")
        out = os.path.join(work, "release")
        U.release(self.emu.board_name, key, out, next_version(before), firmware)
        return U.Release(out)

    def _run(self):
        import tempfile
        from host_tools import update as U
        before = self.emu.banner.group(1).decode()
        self.report = rep = {"kind": self.kind, "result": None, "version_before": before, "version_after": None,
                             "error": None}
        try:
            time.sleep(self.delay_s)
            with tempfile.TemporaryDirectory(prefix="ppmid-update-") as work:
                rel = self._release(work, before)
                self.log("update: offering %s (%s, %d files, %d bytes)" % (rel.version, self.kind, len(rel.data),
                                                                           rel.total))
                s = U.UpdateSender(self.emu.broker_dir, self.emu.gateway, rel, user=OPERATOR)
                try:
                    st = s.run(300)
                finally:
                    s.close()
            rep["result"] = st.get("state")
            rep["version_offered"] = rel.version
            rep["version_after"] = st.get("running")
            rep["error"] = st.get("error")
            self.log("update: %s, running %s" % (rep["result"], rep["version_after"]))
        except Exception as exc:  # noqa: BLE001 - the report says what went wrong
            rep["error"] = {"code": getattr(exc, "code", "E_UPDATE"), "message": str(exc)}
