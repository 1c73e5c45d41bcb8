# Board objects with injected stand-in hardware: the emulated board's WLAN shim, watchdog,
# reset line and UARTs; the board loader's error when there is no board.
import asyncio
import sys

from ppmid.board import BoardError, load
from ppmid.board import emulated


class FakeFile:
    # stands for the supervisor's files: the wifi state file and the control fifo
    def __init__(self, data=b""):
        self.data = bytearray(data)
        self.pos = 0
        self.written = []

    def seek(self, pos):
        self.pos = pos

    def read(self, n):
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += len(out)
        return out

    def write(self, b):
        self.written.append(bytes(b))
        return len(b)


class FakeSocket:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


class Hw:
    def __init__(self, nfc_bus="uart"):
        self.info = {"name": "emulated", "zigbee_uart": {"pty": "zigbee", "baud": 115200},
                     "nfc": {"bus": nfc_bus, "pty": "nfc", "baud": 115200}}
        self.uarts = {}
        self.uart_files = {}
        self.unique_id = b"\x01\x02\x03\x04\x05\x06"
        self.ctl = FakeFile()
        self.wifi = FakeFile(b"1")
        self.t0 = 0


def test_board_interface():
    hw = Hw()
    b = emulated.Board(hw)
    assert b.name == "emulated"
    assert b.fs_root == "/"
    assert b.unique_id() == b"\x01\x02\x03\x04\x05\x06"
    if sys.implementation.name == "micropython":
        assert 0 < b.mem_free() < 1024 * 1024
    b.led.on()
    assert b.led.value() == 1
    b.led.off()
    assert b.led.value() == 0


def test_missing_uart_is_a_board_error():
    b = emulated.Board(Hw())
    try:
        b.zigbee_uart()
    except BoardError as e:
        assert e.code == "E_BOARD"
        assert "zigbee" in e.message
    else:
        assert False, "no error for a missing UART"


def test_i2c_nfc_board_has_no_nfc_uart():
    b = emulated.Board(Hw(nfc_bus="i2c"))
    assert b.nfc_uart() is None


def test_watchdog_arms_then_feeds():
    hw = Hw()
    b = emulated.Board(hw)
    w = b.wdt(1234)
    w.feed()
    w.feed()
    assert hw.ctl.written == [b"W1234\n", b"F\n", b"F\n"]
    assert b.wdt(99) is w  # one watchdog per boot, like machine.WDT


def test_wlan_state_follows_access_point():
    hw = Hw()
    w = emulated.Board(hw).wlan
    assert not w.isconnected()
    assert w.status() == emulated.STAT_IDLE
    try:
        w.connect("ssid", "pw")
    except OSError:
        pass
    else:
        assert False, "connect on an inactive interface must fail"
    w.active(True)
    w.connect("ssid", "pw")
    assert w.isconnected()
    assert w.status() == emulated.STAT_GOT_IP
    assert w.ifconfig()[0] != "0.0.0.0"
    assert w.dns_servers() == ["127.0.0.1"]       # the emulated access point's resolver
    hw.wifi.data[0] = ord("0")
    assert not w.isconnected()
    assert w.status() == emulated.STAT_CONNECTING
    assert w.ifconfig()[0] == "0.0.0.0"
    assert w.dns_servers() == []                  # no link, no resolver
    hw.wifi.data[0] = ord("1")
    assert w.isconnected()


async def test_tracked_sockets_close_when_wifi_drops():
    hw = Hw()
    w = emulated.Board(hw).wlan
    w.active(True)
    w.connect("ssid", "pw")
    s1, s2, s3 = FakeSocket(), FakeSocket(), FakeSocket()
    w.track(s1)
    w.track(s2)
    w.untrack(s2)
    await asyncio.sleep(0.15)
    assert not s1.closed
    hw.wifi.data[0] = ord("0")
    for _ in range(20):
        await asyncio.sleep(0.05)
        if s1.closed:
            break
    assert s1.closed
    assert not s2.closed  # untracked
    # while down, a new socket is closed at once: its connect fails
    w.track(s3)
    assert s3.closed


def test_load_without_board_is_a_clear_error():
    try:
        load()
    except BoardError as e:
        assert "no board" in e.message
    else:
        assert False, "load() found a board outside the emulated board"



def test_load_picks_the_emulated_board_from_its_rom():
    hw = Hw()
    sys.modules["_emuboard"] = hw
    try:
        b = load()
        assert isinstance(b, emulated.Board)
        assert b.info is hw.info
    finally:
        del sys.modules["_emuboard"]


def test_rtc_starts_at_2000_after_power_on_and_is_kept_when_the_supervisor_kept_it():
    from ppmid.clock import Clock
    hw = Hw()
    b = emulated.Board(hw)
    c = Clock(b.time, b.clock_source())
    assert b.clock_source() == "unset" and not c.is_set()
    assert 946684800 <= c.time() < 946684800 + 86400 * 365   # some time in 2000
    assert b.time.gmtime(0)[0] == 2000
    b.set_time(1796083200, 500)                              # the SNTP client sets it
    assert abs(c.time() - 1796083200) <= 1
    line = hw.ctl.written[-1]
    assert line.startswith(b"T") and line.endswith(b"\n")
    # the next boot: the ROM hands over what the supervisor kept
    hw2 = Hw()
    hw2.rtc_ms = int(line[1:-1])
    b2 = emulated.Board(hw2)
    c2 = Clock(b2.time, b2.clock_source())
    assert b2.clock_source() == "rtc" and c2.is_set() and c2.source == "rtc"
    assert abs(c2.time() - 1796083200) <= 1
