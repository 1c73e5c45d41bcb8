# The ESP32 Board over stand-in `machine`/`network` modules (no ESP32 here): pins, flow
# control, LED polarity, watchdog, reset and the NFC bus all come from the board definition.
import sys


class Rec:
    calls = []


class FakePin:
    OUT = 1

    def __init__(self, n, mode=None):
        self.n = n
        self.v = None
        Rec.calls.append(("Pin", n, mode))

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class FakeUART:
    RTS = 1
    CTS = 2

    def __init__(self, uid, **kw):
        Rec.calls.append(("UART", uid, kw))


class FakeI2C:
    def __init__(self, uid, sda=None, scl=None, freq=None):
        Rec.calls.append(("I2C", uid, sda.n, scl.n, freq))


class FakeWDT:
    def __init__(self, timeout):
        Rec.calls.append(("WDT", timeout))

    def feed(self):
        pass


class FakeWLAN:
    def __init__(self, itf):
        self.on = False

    def active(self, on=None):
        if on is None:
            return self.on
        self.on = on

    def isconnected(self):
        return self.on


class Mod:
    pass


machine = Mod()
machine.Pin = FakePin
machine.UART = FakeUART
machine.I2C = FakeI2C
machine.WDT = FakeWDT
machine.reset = lambda: Rec.calls.append(("reset",))
machine.soft_reset = lambda: Rec.calls.append(("soft_reset",))


class FakeRTC:
    def datetime(self, dt):
        Rec.calls.append(("RTC", dt))


machine.RTC = FakeRTC
machine.unique_id = lambda: b"\x24\x0a\xc4\x00\x00\x01"
network = Mod()
network.STA_IF = 0
network.WLAN = FakeWLAN

_saved = {}
for _name, _mod in (("machine", machine), ("network", network)):
    _saved[_name] = sys.modules.get(_name)
    sys.modules[_name] = _mod
from ppmid.board import esp32  # noqa: E402
for _name in _saved:
    if _saved[_name] is None:
        del sys.modules[_name]
    else:
        sys.modules[_name] = _saved[_name]

DEVKITC = {"name": "esp32-devkitc", "chip": "esp32",
           "zigbee_uart": {"id": 2, "tx": 17, "rx": 16, "rts": 4, "cts": 5, "baud": 115200, "flow": "rtscts"},
           "nfc": {"bus": "uart", "id": 1, "tx": 26, "rx": 27, "baud": 115200},
           "status_led": {"pin": 2, "active_high": True}}
C3 = {"name": "esp32c3-devkitm-1", "chip": "esp32c3",
      "zigbee_uart": {"id": 1, "tx": 4, "rx": 5, "baud": 115200, "flow": "none"},
      "nfc": {"bus": "i2c", "id": 0, "sda": 1, "scl": 0, "freq": 400000, "addr": 36},
      "status_led": {"pin": 8, "active_high": False}}


def test_uart_pins_and_flow_control_come_from_the_definition():
    Rec.calls = []
    b = esp32.Board(DEVKITC)
    assert b.name == "esp32-devkitc" and b.fs_root == "/"
    u = b.zigbee_uart()
    assert b.zigbee_uart() is u
    uart = [c for c in Rec.calls if c[0] == "UART"]
    assert len(uart) == 1
    _, uid, kw = uart[0]
    assert uid == 2 and kw["tx"] == 17 and kw["rx"] == 16 and kw["rts"] == 4 and kw["cts"] == 5
    assert kw["flow"] == FakeUART.RTS | FakeUART.CTS and kw["baudrate"] == 115200
    assert b.nfc_uart() is not None
    assert b.nfc_i2c() is None


def test_i2c_nfc_board_and_led_polarity():
    Rec.calls = []
    b = esp32.Board(C3)
    assert b.nfc_uart() is None
    b.nfc_i2c()
    assert ("I2C", 0, 1, 0, 400000) in Rec.calls
    _, uid, kw = [c for c in Rec.calls if c[0] == "UART"][0] if b.zigbee_uart() else (None, None, None)
    assert "flow" not in kw
    b.led.on()
    assert b.led._pin.v == 0  # active low
    assert b.led.value() == 1
    b.led.off()
    assert b.led._pin.v == 1


class FakeNeoPixel:
    # MicroPython's neopixel.NeoPixel(pin, n): a buffer of n (r, g, b) set by index, sent
    # to the LED only by write()
    def __init__(self, pin, n):
        Rec.calls.append(("NeoPixel", pin.n, n))
        self.buf = [(0, 0, 0)] * n
        self.shown = None

    def __setitem__(self, i, rgb):
        self.buf[i] = rgb

    def write(self):
        self.shown = list(self.buf)
        Rec.calls.append(("write", self.buf[0]))


def _with_neopixel(body):
    neopixel = Mod()
    neopixel.NeoPixel = FakeNeoPixel
    saved = sys.modules.get("neopixel")
    sys.modules["neopixel"] = neopixel
    try:
        return body()
    finally:
        if saved is None:
            del sys.modules["neopixel"]
        else:
            sys.modules["neopixel"] = saved


S3_PIXEL = dict(DEVKITC, name="esp32s3-devkitc-1", chip="esp32s3", status_led={"pin": 48, "kind": "neopixel"})


def test_addressable_rgb_led_is_driven_through_neopixel():
    Rec.calls = []
    b = _with_neopixel(lambda: esp32.Board(S3_PIXEL))
    assert ("NeoPixel", 48, 1) in Rec.calls
    px = b.led._px
    assert px.shown == [(0, 0, 0)] and b.led.value() == 0     # dark from the start
    b.led.on()
    assert px.shown == [(16, 16, 16)] and b.led.value() == 1
    b.led.value(0)
    assert px.shown == [(0, 0, 0)] and b.led.value() == 0
    # the pin level is never touched: a WS2812 reads pulses, not a level
    assert b.led._pin.v is None
    spec = dict(S3_PIXEL, status_led={"pin": 8, "kind": "neopixel", "rgb": [0, 40, 0]})
    b = _with_neopixel(lambda: esp32.Board(spec))
    b.led.value(1)
    assert b.led._px.shown == [(0, 40, 0)]


def test_plain_led_does_not_use_neopixel_and_an_unknown_kind_is_refused():
    Rec.calls = []
    b = _with_neopixel(lambda: esp32.Board(DEVKITC))
    b.led.on()
    assert b.led._pin.v == 1 and not [c for c in Rec.calls if c[0] in ("NeoPixel", "write")]
    from ppmid.board import BoardError
    try:
        esp32.Board(dict(DEVKITC, status_led={"pin": 2, "kind": "dotstar"}))
    except BoardError as exc:
        assert exc.code == "E_BOARD" and "dotstar" in exc.message
    else:
        raise AssertionError("an unknown LED kind was taken")


def test_watchdog_reset_wlan_and_id():
    Rec.calls = []
    b = esp32.Board(DEVKITC)
    w = b.wdt(8000)
    assert b.wdt(1) is w
    assert Rec.calls.count(("WDT", 8000)) == 1 and ("WDT", 1) not in Rec.calls
    b.reset()
    assert ("reset",) in Rec.calls
    b.soft_reset()
    assert Rec.calls[-1] == ("soft_reset",)
    assert b.unique_id() == b"\x24\x0a\xc4\x00\x00\x01"
    assert not b.wlan.isconnected()
    b.wlan.active(True)
    assert b.wlan.isconnected()
    b.wlan.track(object())  # a no-op on the ESP32


def test_dns_servers_from_ipconfig_or_the_older_ifconfig():
    b = esp32.Board(DEVKITC)
    answers = {"dns": "192.168.1.1"}
    esp32.network.ipconfig = lambda key: answers[key]    # MicroPython 1.23+
    try:
        assert b.wlan.dns_servers() == ["192.168.1.1"]
        answers["dns"] = "0.0.0.0"                      # no DHCP lease yet
        assert b.wlan.dns_servers() == []
    finally:
        del esp32.network.ipconfig
    # before 1.23: the fourth item of the interface's ifconfig()
    b.wlan._wlan.ifconfig = lambda: ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.2")
    assert b.wlan.dns_servers() == ["192.168.1.2"]


class Time2000:
    """The ESP32 port's time module: seconds from 2000-01-01."""

    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now

    def gmtime(self, secs=None):
        import time
        return time.gmtime((self.now if secs is None else secs) + 946684800)


def test_clock_source_and_set_time_on_the_2000_epoch():
    saved = esp32.time
    try:
        esp32.time = Time2000(7)                         # power-on: 2000-01-01 00:00:07
        b = esp32.Board(DEVKITC)
        assert b.time is esp32.time
        assert b.clock_source() == "unset"
        Rec.calls = []
        b.set_time(1796083200 + 3723, 250)               # 2026-12-01T01:02:03.250Z, a Tuesday
        assert Rec.calls == [("RTC", (2026, 12, 1, 1, 1, 2, 3, 250000))]
        esp32.time.now = 1796083200 - 946684800          # what the RTC reads after a soft reset
        assert b.clock_source() == "rtc"
    finally:
        esp32.time = saved


def test_wired_uart_only_when_the_definition_names_one_and_opened_once():
    Rec.calls = []
    assert esp32.Board(DEVKITC).wired_uart() is None
    assert [c for c in Rec.calls if c[0] == "UART"] == []
    d = dict(DEVKITC)
    d["wired_uart"] = {"id": 0, "tx": 43, "rx": 44, "baud": 115200}   # e.g. an S3's UART0 beside a USB REPL
    b = esp32.Board(d)
    u = b.wired_uart()
    assert u is not None and b.wired_uart() is u
    (uart,) = [c for c in Rec.calls if c[0] == "UART"]
    assert uart[1] == 0 and uart[2]["tx"] == 43 and uart[2]["rx"] == 44 and "flow" not in uart[2]


class FakePartition:
    # esp32.Partition as MicroPython documents it: RUNNING, get_next_update(), info() ->
    # (type, subtype, addr, size, label, encrypted), readblocks/writeblocks of 4 KB blocks
    # (erase before write when no offset is given), set_boot(), and the class method
    # mark_app_valid_cancel_rollback().
    RUNNING = 1
    valid_raises = False

    def __init__(self, which, label="ota_0"):
        self.label = label
        self.blocks = {}

    def info(self):
        return (0, 0x10 if self.label == "ota_0" else 0x11, 0x10000, 8 * 4096, self.label, False)

    def get_next_update(self):
        return _NEXT[0]

    def writeblocks(self, n, buf, off=None):
        Rec.calls.append(("writeblocks", self.label, n, len(buf), off))
        self.blocks[n] = bytes(buf)

    def readblocks(self, n, buf, off=None):
        buf[:] = self.blocks.get(n, b"\xff" * len(buf))

    def set_boot(self):
        Rec.calls.append(("set_boot", self.label))

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        Rec.calls.append(("mark_valid",))
        if cls.valid_raises:
            raise OSError(-261)  # a build without CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE


_NEXT = [FakePartition(0, "ota_1")]


def _image_slots():
    fake = Mod()
    fake.Partition = FakePartition
    saved = sys.modules.get("esp32")
    sys.modules["esp32"] = fake
    try:
        return esp32.Board(DEVKITC).image_slots()
    finally:
        if saved is None:
            del sys.modules["esp32"]
        else:
            sys.modules["esp32"] = saved


def test_image_slots_write_the_next_ota_partition_in_erased_4k_blocks():
    Rec.calls = []
    s = _image_slots()
    assert s.running() == "ota_0" and s.next_update() == ("ota_1", 8 * 4096)
    s.write_block("ota_1", 3, bytes(4096))
    assert ("writeblocks", "ota_1", 3, 4096, None) in Rec.calls  # no offset: erased first
    buf = bytearray(4096)
    s.read_block("ota_1", 3, buf)
    assert bytes(buf) == bytes(4096)
    for label, n, size in (("ota_0", 0, 4096), ("ota_1", 8, 4096), ("ota_1", 0, 512)):
        try:
            s.write_block(label, n, bytes(size))
        except OSError:
            continue
        raise AssertionError("wrote %s block %d of %d bytes" % (label, n, size))
    s.set_boot("ota_1")
    assert ("set_boot", "ota_1") in Rec.calls


def test_mark_valid_cancels_the_rollback_and_tolerates_a_build_without_it():
    Rec.calls = []
    s = _image_slots()
    s.mark_valid()
    FakePartition.valid_raises = True
    try:
        s.mark_valid()
    finally:
        FakePartition.valid_raises = False
    assert Rec.calls.count(("mark_valid",)) == 2


def test_no_esp32_module_means_no_image_slots():
    assert esp32.Board(DEVKITC).image_slots() is None


BOARDS = __file__.rsplit("/", 1)[0] + "/../../boards/"


def _definition_file(text):
    """A board.json to read by path (removed by the test: _remove)."""
    from scratch_files import unique_path
    path = unique_path("ppmid-board") + ".json"
    with open(path, "w") as f:
        f.write(text)
    return path


def _remove(path):
    import os
    try:
        os.remove(path)
    except OSError:
        pass


def test_the_board_keeps_only_what_the_firmware_reads_of_its_definition():
    # the deployed board.json of every ESP32 board: the host tools' fields (descriptions,
    # sources, heap, flash layout) are not kept for the app's life
    from ppmid.board import read_definition
    for name in ("esp32-devkitc", "esp32s3-devkitc-1", "esp32s3-devkitc-1-n8r8", "esp32c3-devkitm-1"):
        with open(BOARDS + name + "/board.json") as f:
            text = f.read()
        full = __import__("json").loads(text)
        path = _definition_file(text)
        try:
            d = read_definition(path)
        finally:
            _remove(path)
        assert d["name"] == name and d["zigbee_uart"] == full["zigbee_uart"]
        assert d["status_led"] == full["status_led"] and d.get("nfc") == full.get("nfc")
        assert d.get("wired_uart") == full.get("wired_uart")
        assert "description" not in d and "heap_source" not in d and "firmware_exclude" not in d
        assert set(d) <= set(full)
        b = _with_neopixel(lambda: esp32.Board(d))
        assert b.name == name and b.zigbee_uart() is not None


def test_a_bad_definition_is_a_board_error():
    from ppmid.board import BoardError, read_definition
    for text, words in (("[1, 2]", "not a board definition"), ("{\"name\": ", "not valid JSON")):
        path = _definition_file(text)
        try:
            read_definition(path)
        except BoardError as exc:
            assert exc.code == "E_BOARD" and words in exc.message and path in exc.message
        else:
            raise AssertionError("took %r" % text)
        finally:
            _remove(path)
    try:
        from scratch_files import unique_path
        read_definition(unique_path("ppmid-no-such-board") + ".json")
    except BoardError as exc:
        assert exc.code == "E_BOARD" and "missing" in exc.message
    else:
        raise AssertionError("a missing definition was taken")


def test_wlan_passes_the_interface_s_calls_to_network_wlan():
    class Sta:
        def __init__(self):
            self.calls = []

        def connect(self, ssid=None, password=None):
            self.calls.append(("connect", ssid, password))

        def disconnect(self):
            self.calls.append(("disconnect",))

        def status(self, param=None):
            return 1010 if param is None else -60

        def ifconfig(self, conf=None):
            if conf is not None:
                self.calls.append(("ifconfig", conf))
            return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")

        def isconnected(self):
            return True

    w = esp32.Board(DEVKITC).wlan
    sta = w._wlan = Sta()
    w.connect("home", "secret")
    w.disconnect()
    assert sta.calls == [("connect", "home", "secret"), ("disconnect",)]
    assert w.status() == 1010 and w.status("rssi") == -60
    assert w.ifconfig()[0] == "192.168.1.50"
    w.ifconfig(("10.0.0.2", "255.0.0.0", "10.0.0.1", "10.0.0.1"))
    assert sta.calls[-1][0] == "ifconfig"
    assert w.poll() and w.isconnected()
    w.track(object())
    w.untrack(object())
    try:
        w.scan()   # not part of the interface, and not on the stand-in either
    except AttributeError:
        pass
    else:
        raise AssertionError("an attribute network.WLAN lacks was found")
