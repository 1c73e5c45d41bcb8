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


class RTC:
    # ppmid.board.esp32's Board.set_time sets it when SNTP answers (the gauge's connected
    # gateway, h32.SntpServer): the port's own clock cannot be set, and nothing is kept
    def datetime(self, t=None):
        if t is None:
            return (2000, 1, 1, 5, 0, 0, 0, 0)
