# Stand-in `machine` for the heap gauge: the webassembly port has none. Only what the
# board code touches at import or construction; nothing here talks to hardware.
def unique_id():
    return b"\x00\x01\x02\x03\x04\x05"


def reset():
    raise SystemExit(3)


class Pin:
    # MicroPython's ESP32 port answers Pin(n) with an object of a const table
    # (ports/esp32/machine_pin.c): no heap. The stand-in's are made once, here, before the
    # gauge's baseline (GPIO0-48, the ESP32-S3's range), and Pin(n) returns one of them.
    OUT = 1
    IN = 0
    _table = []

    def __new__(cls, n=None, *a, **k):
        return cls._table[n] if n is not None else object.__new__(cls)

    def __init__(self, *a, **k):
        pass

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = v


for _n in range(49):
    Pin._table.append(Pin())
    Pin._table[-1]._v = 0


class UART:
    RTS = 1  # ESP-IDF's UART_HW_FLOWCTRL_RTS / _CTS, as MicroPython's ESP32 port has them
    CTS = 2

    def __init__(self, *a, **k):
        pass


class I2C:
    def __init__(self, *a, **k):
        pass


class _Wdt:
    def feed(self):
        pass


_WDT = _Wdt()


def WDT(*a, **k):
    # the ESP32 port's watchdog is one static object (ports/esp32/machine_wdt.c)
    return _WDT


class RTC:
    # ppmid.board.esp32's Board.set_time sets it when SNTP answers (the gauge's connected
    # gateway, h32.SntpServer): the port's own clock cannot be set, and nothing is kept
    def datetime(self, t=None):
        if t is None:
            return (2000, 1, 1, 5, 0, 0, 0, 0)
