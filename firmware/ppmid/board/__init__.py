# Board support: the only firmware code that touches `machine`, `network` or `esp32`.
# Everything else receives hardware handles (UART streams, LED, WLAN, watchdog) from the
# Board object that load() returns; the interface is documented in docs/platform.md.
from ppmid.errors import PpmidError

E_BOARD = "E_BOARD"


class BoardError(PpmidError):
    def __init__(self, message):
        super().__init__(E_BOARD, message)


def load(definition=None):
    """The Board for the hardware we run on: an ESP32 (esp32.py) or the emulated board
    (emulated.py, whose ROM provides the `_emuboard` module). definition: the board.json of
    an update slot (main.py), when it has one; else /board.json (the emulated board's
    comes from its supervisor)."""
    import sys
    if sys.platform == "esp32":
        from ppmid.board.esp32 import Board
        if definition is not None:
            try:
                return Board(read_definition(definition))
            except BoardError:
                pass
        return Board(read_definition("/board.json"))
    hw = sys.modules.get("_emuboard")
    if hw is None:
        raise BoardError("no board: not an ESP32 and not the emulated board "
                         "(start one with `ppmid board start --board emulated`)")
    from ppmid.board.emulated import Board
    return Board(hw)


# What the firmware reads of a board definition (the Board, boot.py's NFC road). The rest
# (descriptions, sources, the host tools' heap, flash and image fields) is for the host
# tools: the Board keeps the dict for the app's life, so only these stay in the heap.
_READ = ("name", "zigbee_uart", "nfc", "wired_uart", "status_led")


def read_definition(path):
    """The firmware's part (_READ) of boards/NAME/board.json as deployed to the flash by
    `ppmid deploy`."""
    import json
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError:
        raise BoardError("%s is missing: deploy with `ppmid deploy --board NAME`" % path)
    except ValueError:
        raise BoardError("%s is not valid JSON" % path)
    if not isinstance(d, dict):
        raise BoardError("%s is not a board definition (a JSON object)" % path)
    return {k: d[k] for k in _READ if k in d}


# The ESP32 Board's set-up of its UARTs and status LED (ppmid.board.esp32's UartPort and
# Led). Here, not in esp32.py: the Board makes them at boot, while this package is loaded
# (load() built the Board), and boot.drop() unloads the package, so the running app does
# not hold code that runs once (docs/memory.md, session 10).

def esp32_uart(spec, machine):
    """The machine.UART of a board definition's UART entry (id, tx, rx, baud; flow
    "rtscts" with rts and cts pins). machine: the board module's (tests give a stand-in)."""
    kw = {"baudrate": spec.get("baud", 115200), "tx": spec["tx"], "rx": spec["rx"],
          "rxbuf": 2048, "timeout": 0}
    if spec.get("flow") == "rtscts" and "rts" in spec:
        kw["rts"] = spec["rts"]
        kw["cts"] = spec["cts"]
        kw["flow"] = machine.UART.RTS | machine.UART.CTS
    return machine.UART(spec["id"], **kw)


def esp32_led(led, spec, machine):
    """Set up an ESP32 Led from the definition's status_led (see esp32.Led), off."""
    kind = spec.get("kind", "gpio")
    led._pin = machine.Pin(spec["pin"], machine.Pin.OUT)
    led._px = None
    if kind == "neopixel":
        from neopixel import NeoPixel  # MicroPython's, imported only for that kind
        led._px = NeoPixel(led._pin, 1)
        led._rgb = tuple(spec.get("rgb", (16, 16, 16)))
        led._lit = 0
    elif kind == "gpio":
        led._on = 1 if spec.get("active_high", True) else 0
    else:
        raise BoardError("status_led kind %r is not gpio or neopixel" % (kind,))
    led.off()
