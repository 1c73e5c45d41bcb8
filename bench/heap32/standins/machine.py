# Stand-in `machine` for the heap gauge: the webassembly port has none. Only what the
# board code touches at import or construction; nothing here talks to hardware.
def unique_id():
    return b"\x00\x01\x02\x03\x04\x05"


def reset():
    raise SystemExit(3)


class Pin:
    OUT = 1
    IN = 0

    def __init__(self, *a, **k):
        self._v = 0

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = v


class UART:
    RTS = 1  # ESP-IDF's UART_HW_FLOWCTRL_RTS / _CTS, as MicroPython's ESP32 port has them
    CTS = 2

    def __init__(self, *a, **k):
        pass


class I2C:
    def __init__(self, *a, **k):
        pass


class WDT:
    def __init__(self, *a, **k):
        pass

    def feed(self):
        pass
