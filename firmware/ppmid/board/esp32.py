# ESP32-family boards (ESP32, ESP32-S3, ESP32-C3): the same Board interface as
# emulated.py over machine/network. Pin numbers come from the deployed /board.json.
import gc
import sys
import time

import asyncio
import machine
import network


class UartPort:
    # A machine.UART with asyncio streams (the ESP32 UART is pollable).
    def __init__(self, spec):
        # the UART is opened by ppmid.board.esp32_uart: a Board makes its UARTs at boot,
        # while that package is loaded, so this module does not hold code that runs once
        from ppmid.board import esp32_uart
        self.uart = esp32_uart(spec, machine)

    def streams(self):
        return asyncio.StreamReader(self.uart), asyncio.StreamWriter(self.uart, {})


class Led:
    # status_led "kind": "gpio" (the default: a plain LED on the pin, "active_high") or
    # "neopixel": an addressable RGB LED (WS2812 type, as on the ESP32-S3 and C3 devkits),
    # which a pin level cannot light; lit in "rgb" (default a dim white). Set up by
    # ppmid.board.esp32_led (at boot, with the Board, while that package is loaded).
    def __init__(self, spec):
        from ppmid.board import esp32_led  # boot-only code, as UartPort's
        esp32_led(self, spec, machine)

    def _set(self, lit):
        if self._px is None:
            self._pin.value(self._on if lit else 1 - self._on)
        else:
            self._px[0] = self._rgb if lit else (0, 0, 0)
            self._px.write()
            self._lit = lit

    def on(self):
        self._set(1)

    def off(self):
        self._set(0)

    def value(self, v=None):
        if v is None:
            if self._px is not None:
                return self._lit
            return 1 if self._pin.value() == self._on else 0
        self._set(1 if v else 0)


class WLAN:
    # network.WLAN(STA_IF) itself for active(), connect(), disconnect(), isconnected(),
    # status() and ifconfig() (through __getattr__: no wrapper method held for each), plus
    # what the firmware asks of every board's WLAN: dns_servers(), and track()/untrack()/
    # poll(), no-ops here (a real link drop fails the socket).
    def __init__(self):
        self._wlan = network.WLAN(network.STA_IF)

    def __getattr__(self, name):
        return getattr(self._wlan, name)

    def dns_servers(self):
        """The resolvers to ask (ppmid.dns_lookup): the one DHCP gave, or that
        network.ipconfig(dns=...) set; [] when there is none. network.ipconfig('dns') is
        MicroPython 1.23's; before it, the 4th item of ifconfig()."""
        try:
            d = network.ipconfig("dns")
        except (AttributeError, TypeError, ValueError, OSError):
            d = self._wlan.ifconfig()[3]
        return [d] if d and d != "0.0.0.0" else []

    def track(self, sock):
        pass

    untrack = track

    def poll(self):
        return self._wlan.isconnected()


class Board:
    def __init__(self, info):
        self.info = info
        self.name = info["name"]
        self.fs_root = "/"
        self.led = Led(info["status_led"])
        self.wlan = WLAN()
        self._zigbee = None
        self._nfc = None
        self._wdt = None
        self.time = time     # counts from 2000-01-01 on this port; ppmid.clock adds the offset

    def clock_source(self):
        """"rtc" when the RTC kept a set time across the reset (anything but a power cut
        keeps it), else "unset" (it restarts at 2000-01-01)."""
        from ppmid.clock import epoch_offset, SET_AFTER
        return "rtc" if time.time() + epoch_offset(time) >= SET_AFTER else "unset"

    def set_time(self, unix_s, ms=0):
        """Set the RTC (the SNTP client's setter); it survives a soft reset."""
        from ppmid.clock import epoch_offset
        t = time.gmtime(unix_s - epoch_offset(time))
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], ms * 1000))

    def zigbee_uart(self):
        if self._zigbee is None:
            self._zigbee = UartPort(self.info["zigbee_uart"])
        return self._zigbee

    def nfc_uart(self):
        nfc = self.info.get("nfc")
        if not nfc or nfc.get("bus") != "uart":
            return None
        if self._nfc is None:
            self._nfc = UartPort(nfc)
        return self._nfc

    def wired_uart(self):
        """The wired road's UART (docs/wired.md): a free UART the board definition names
        as "wired_uart", never UART0 while the REPL is on it. None when not named."""
        spec = self.info.get("wired_uart")
        if not spec:
            return None
        if getattr(self, "_wired", None) is None:  # set only on a board that has one
            self._wired = UartPort(spec)
        return self._wired

    def nfc_i2c(self):
        nfc = self.info.get("nfc")
        if not nfc or nfc.get("bus") != "i2c":
            return None
        if self._nfc is None:
            self._nfc = machine.I2C(nfc["id"], sda=machine.Pin(nfc["sda"]), scl=machine.Pin(nfc["scl"]),
                                    freq=nfc.get("freq", 400000))
        return self._nfc

    def wdt(self, timeout_ms=5000):
        if self._wdt is None:
            self._wdt = machine.WDT(timeout=timeout_ms)
        return self._wdt

    def reset(self):
        machine.reset()

    def soft_reset(self):
        """Restart the firmware, not the chip (the RTC, and so the clock, is kept)."""
        machine.soft_reset()

    def image_slots(self):
        """The OTA app partitions (esp32_slots.ImageSlots: its code is loaded only for an
        image update, or a boot after one), or None on a partition table without them."""
        # importing it loads the ppmid.board package again, which boot.drop() unloaded:
        # what the import loaded goes again (the instance keeps its class and code)
        before = set(sys.modules)
        from ppmid.board.esp32_slots import ImageSlots
        from ppmid.modules import drop_since
        drop_since(before)
        try:
            return ImageSlots()
        except (ImportError, AttributeError, OSError):
            return None

    def mem_free(self):
        return gc.mem_free()

    def unique_id(self):
        return machine.unique_id()

    def uptime_ms(self):
        return time.ticks_ms()
