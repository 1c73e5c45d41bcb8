"""Progress of long host work (deploy, emulate start-up, replay): a bar redrawn in place
when the stream is a terminal, plain lines otherwise (a log file or CI output must read
as before, one line per step, no control characters).

    bar = Progress("deploy", total=5)
    bar.step("built 54 files")       # tty: [#####.....] 1/5 deploy: built 54 files
    bar.update(3)                    # counts without a message (replay: commands sent)
    bar.close()
"""
import sys
import time


def is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """total: the number of steps or items expected (the bar never passes it: a flow that
    logs more steps than planned shows full, not broken). every: in plain mode, a count-only
    update prints a line when it has moved this fraction of total since the last one."""

    def __init__(self, label, total, stream=None, tty=None, width=24, every=0.1, min_interval_s=0.1):
        self.label = label
        self.total = max(1, int(total))
        self.stream = stream or sys.stdout
        self.tty = is_tty(self.stream) if tty is None else tty
        self.width = width
        self.every = every
        self.min_interval_s = min_interval_s
        self.done = 0
        self.text = ""
        self._printed_at = 0
        self._drawn_at = 0.0
        self._open = False

    def step(self, text):
        """One step done, with what it was."""
        self.update(self.done + 1, text)

    def update(self, done, text=None):
        self.done = done
        if text is not None:
            self.text = text
        if self.tty:
            now = time.monotonic()
            # a step with a message is always drawn; bare counts at most 10 times a second
            if text is not None or now - self._drawn_at >= self.min_interval_s or done >= self.total:
                self._draw()
                self._drawn_at = now
        elif text is not None:
            self._line(text)
        elif done - self._printed_at >= max(1, self.every * self.total) or done == self.total:
            self._line("%d/%d" % (done, self.total))

    def _line(self, text):
        self.stream.write("%s: %s\n" % (self.label, text))
        self.stream.flush()
        self._printed_at = self.done

    def render(self):
        """The bar as text (also what a terminal shows)."""
        filled = min(self.width, self.width * self.done // self.total)
        return "[%s%s] %d/%d %s%s" % ("#" * filled, "." * (self.width - filled), min(self.done, self.total),
                                      self.total, self.label, (": " + self.text) if self.text else "")

    def _draw(self):
        # cut to the terminal's width: a wrapped line would not be redrawn in place
        import shutil
        cols = shutil.get_terminal_size((100, 24)).columns
        self.stream.write("\r\x1b[2K" + self.render()[:max(20, cols - 1)])
        self.stream.flush()
        self._open = True

    def close(self, text=None):
        """Finish the bar's line (tty) or print the closing text (plain)."""
        if text is not None:
            self.text = text
        if self.tty and self._open:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
        elif not self.tty and text is not None:
            self._line(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
