# The emulated board (MicroPython unix port under host_tools/emuboard.py). Its "hardware"
# comes from the ROM as the `_emuboard` object: the board definition, the UART pty paths,
# the unique id, an open control channel to the supervisor (watchdog, reset line) and the
# file holding the emulated access point's state. Tests may inject a stand-in object.
import gc
import sys
import time

import asyncio
from ppmid.board import BoardError
from ppmid.clock import EPOCH_2000, ticks_ms, ticks_diff, ticks_add, sleep_ms

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010

WIFI_POLL_MS = 100  # tracked sockets close within this of the access point going down


class Led:
    # The emulated status LED: its state, shown on the console when it changes.
    def __init__(self, show=True):
        self.state = 0
        self.show = show

    def value(self, v=None):
        if v is None:
            return self.state
        v = 1 if v else 0
        if v != self.state and self.show:
            print("[led] %s" % ("on" if v else "off"))
        self.state = v

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class WLAN:
    # network.WLAN(STA_IF)-like. The access point is the supervisor's DIR/wifi file
    # ("1" up, "0" down), so tests can drop the link and bring it back.
    def __init__(self, wifi_file):
        self._file = wifi_file
        self._active = False
        self._ssid = None
        self._socks = []
        self._watching = False

    def ap_up(self):
        self._file.seek(0)
        return self._file.read(1) == b"1"

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._ssid = None
            self._close_all()
        return self._active

    def connect(self, ssid=None, password=None):
        if not self._active:
            raise OSError("WLAN not active")
        self._ssid = ssid

    def disconnect(self):
        self._ssid = None
        self._close_all()

    def isconnected(self):
        return self._active and self._ssid is not None and self.ap_up()

    def status(self, param=None):
        if param == "rssi":
            return -50 if self.isconnected() else 0
        if not self._active or self._ssid is None:
            return STAT_IDLE
        return STAT_GOT_IP if self.ap_up() else STAT_CONNECTING

    def ifconfig(self, conf=None):
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def dns_servers(self):
        """The resolver "DHCP" gave: the emulated access point's, loopback port 53 (where
        `ppmid emulate --broker-name` serves; the config's dns.port says which port)."""
        return [self.ifconfig()[3]] if self.isconnected() else []

    def track(self, sock):
        """Register a socket to be closed when the Wi-Fi drops. Call it right after
        creating the socket, before connect(): while the link is down the socket is closed
        at once, so the connect fails as it would on a real board."""
        if not self.isconnected():
            self._close(sock)
            return
        self._socks.append(sock)
        if not self._watching:
            self._watching = True
            asyncio.create_task(self._watch())

    def untrack(self, sock):
        if sock in self._socks:
            self._socks.remove(sock)

    def poll(self):
        """Close the tracked sockets if the link is down; True while connected."""
        if self.isconnected():
            return True
        self._close_all()
        return False

    async def _watch(self):
        try:
            while self._socks:
                self.poll()
                await sleep_ms(WIFI_POLL_MS)
        finally:
            self._watching = False

    def _close_all(self):
        socks, self._socks = self._socks, []
        for s in socks:
            self._close(s)

    @staticmethod
    def _close(sock):
        try:
            sock.close()
        except OSError:
            pass


class Watchdog:
    # machine.WDT-like: armed once, cannot be stopped; the supervisor resets the board
    # when it is not fed within the timeout.
    def __init__(self, ctl, timeout_ms):
        self._ctl = ctl
        ctl.write(b"W%d\n" % timeout_ms)

    def feed(self):
        self._ctl.write(b"F\n")


class RtcTime:
    # The ESP32 port's `time` as ppmid.clock reads it: seconds from 2000-01-01, starting at
    # 0 at power-on, until set(). The supervisor keeps the setting (as an offset from the
    # host's clock, so the RTC runs on while the chip reboots) across every reboot but a
    # kill, which is a power cut: hw.rtc_ms is None then (docs/platform.md "Clock").
    def __init__(self, hw):
        self._ctl = hw.ctl
        self._t0 = hw.t0
        self._delta = getattr(hw, "rtc_ms", None)   # RTC ms since 2000 minus host unix ms
        self.kept = self._delta is not None
        self.ticks_ms, self.ticks_diff, self.ticks_add = ticks_ms, ticks_diff, ticks_add

    def _ms(self):
        if self._delta is None:
            return ticks_diff(ticks_ms(), self._t0)
        return time.time_ns() // 1000000 + self._delta

    def time(self):
        return self._ms() // 1000

    def gmtime(self, secs=None):
        return time.gmtime((self.time() if secs is None else secs) + EPOCH_2000)

    localtime = gmtime

    def set(self, unix_s, ms=0):
        self._delta = (unix_s - EPOCH_2000) * 1000 + ms - time.time_ns() // 1000000
        self._ctl.write(b"T%d\n" % self._delta)


def _otadata():
    """ppmid.board.otadata for one call, kept by the caller's reference only: importing it
    loads the ppmid.board package, which boot.drop() unloaded after boot; kept, it would be
    held again until the reset, with a second BoardError class (docs/memory.md)."""
    before = set(sys.modules)
    from ppmid.board import otadata
    from ppmid.modules import drop_since
    drop_since(before)
    return otadata


class ImageSlots:
    # The stand-in for esp32.Partition on the emulated board (docs/update.md "Image
    # updates"): two app partitions and the OTA data are files next to the flash image,
    # opened by the ROM (hw.ota_files, hw.otadata); the supervisor applies the bootloader's
    # step (ppmid.board.otadata.boot_step) at every reset and says which one booted
    # (hw.ota_running). What boots is still the same unix-port binary: only the choice of
    # partition and the rollback are modelled, not the image's contents.
    BLOCK = 4096

    def __init__(self, hw):
        self._files = hw.ota_files
        self._data = hw.otadata
        self._running = hw.ota_running
        self.size = hw.ota_size

    def _record(self):
        otadata = _otadata()
        self._data.seek(0)
        return otadata.parse(self._data.read(otadata.RECORD))

    def _write_record(self, rec):
        otadata = _otadata()
        self._data.seek(0)
        self._data.write(otadata.dump(rec))
        self._data.flush()

    def running(self):
        return self._running

    def next_update(self):
        """(label, bytes) of the partition an image update writes: never the running one."""
        return _otadata().other(self._running), self.size

    def _file(self, label, n, nbytes):
        if label == self._running:
            raise OSError("partition %s is running" % label)
        if n < 0 or (n + 1) * self.BLOCK > self.size or nbytes != self.BLOCK:
            raise OSError("block %d of %d bytes is outside partition %s" % (n, nbytes, label))
        f = self._files[label]
        f.seek(n * self.BLOCK)
        return f

    def write_block(self, label, n, buf):
        f = self._file(label, n, len(buf))
        f.write(buf)
        f.flush()

    def read_block(self, label, n, buf):
        self._file(label, n, len(buf)).readinto(buf)

    def set_boot(self, label):
        otadata = _otadata()
        self._write_record(otadata.set_boot(self._record(), label, self._running))

    def mark_valid(self):
        otadata = _otadata()
        self._write_record(otadata.mark_valid(self._record(), self._running))

    def status(self):
        rec = self._record()
        return {"running": self._running, "state": rec.get("state") if rec.get("boot") == self._running else "valid"}


class Board:
    def __init__(self, hw):
        self._hw = hw
        self.info = hw.info
        self.name = hw.info["name"]
        self.fs_root = "/"
        self.led = Led()
        self.wlan = WLAN(hw.wifi)
        self._uarts = {}
        self._wdt = None
        self.time = RtcTime(hw)   # the time module for ppmid.clock.Clock

    def clock_source(self):
        """"rtc" when the RTC kept its setting across the reset, else "unset"."""
        return "rtc" if self.time.kept else "unset"

    def set_time(self, unix_s, ms=0):
        """Set the RTC (the SNTP client's setter)."""
        self.time.set(unix_s, ms)

    def _pty_uart(self, spec):
        name = spec["pty"]
        if name not in self._uarts:
            from ppmid.board.ptyuart import PtyUart
            f = self._hw.uart_files.get(name)
            if f is None:
                raise BoardError("the emulated board has no %s UART" % name)
            self._uarts[name] = PtyUart(f, spec.get("baud", 115200))
        return self._uarts[name]

    def zigbee_uart(self):
        return self._pty_uart(self.info["zigbee_uart"])

    def nfc_uart(self):
        nfc = self.info.get("nfc")
        if not nfc or nfc.get("bus") != "uart":
            return None
        return self._pty_uart(nfc)

    def wired_uart(self):
        """The wired road's UART (docs/wired.md), or None when the board has none."""
        spec = self.info.get("wired_uart")
        return self._pty_uart(spec) if spec else None

    def nfc_i2c(self):
        raise BoardError("the emulated board has no I2C bus (its NFC reader is on a UART)")

    def wdt(self, timeout_ms=5000):
        if self._wdt is None:
            self._wdt = Watchdog(self._hw.ctl, timeout_ms)
        return self._wdt

    def reset(self):
        """Hard reset: the supervisor kills and restarts the MicroPython process."""
        self._hw.ctl.write(b"R3\n")
        for _ in range(50):
            time.sleep(0.1)
        raise SystemExit(3)  # no supervisor took the reset line: stop anyway

    def soft_reset(self):
        """machine.soft_reset(): the supervisor restarts the MicroPython process, prints
        MicroPython's `MPY: soft reboot` line and keeps the REPL mode (raw or friendly)."""
        self._hw.ctl.write(b"R0\n")
        for _ in range(50):
            time.sleep(0.1)
        raise SystemExit(0)  # no supervisor took the reset line: stop anyway

    def image_slots(self):
        """The app partitions (ImageSlots), or None when the emulated board has none."""
        if getattr(self._hw, "ota_files", None) is None:
            return None
        return ImageSlots(self._hw)

    def mem_free(self):
        return gc.mem_free()

    def unique_id(self):
        return self._hw.unique_id

    def uptime_ms(self):
        return time.ticks_diff(time.ticks_ms(), self._hw.t0)
