# The ESP32 firmware image's OTA app partitions for image updates (Board.image_slots() in
# esp32.py, docs/update.md "Image updates"): a module of its own, so that only an image
# update, or the boot after one, holds this code.


class ImageSlots:
    # The firmware image's two OTA app partitions through esp32.Partition (MicroPython's
    # ESP32 port; docs/update.md "Image updates"): blocks of 4 KB, each erased by
    # writeblocks() before it is written (no offset given), set_boot() for the next reset,
    # and mark_app_valid_cancel_rollback() once a new image ran and connected (the ESP-IDF
    # bootloader rolls back a partition whose first boot ended without it, when the build
    # has CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE). Never run on hardware here.
    BLOCK = 4096

    def __init__(self):
        from esp32 import Partition
        self._P = Partition
        self._run = Partition(Partition.RUNNING)
        self._next = self._run.get_next_update()
        self.size = self._next.info()[3]

    def running(self):
        return self._run.info()[4]

    def next_update(self):
        return self._next.info()[4], self.size

    def _part(self, label, n, nbytes):
        if label != self._next.info()[4] or nbytes != self.BLOCK or n < 0 or (n + 1) * self.BLOCK > self.size:
            raise OSError("block %d of %d bytes is outside partition %s" % (n, nbytes, label))
        return self._next

    def write_block(self, label, n, buf):
        self._part(label, n, len(buf)).writeblocks(n, buf)

    def read_block(self, label, n, buf):
        self._part(label, n, len(buf)).readblocks(n, buf)

    def set_boot(self, label):
        self._part(label, 0, self.BLOCK).set_boot()

    def mark_valid(self):
        try:
            self._P.mark_app_valid_cancel_rollback()
        except OSError:
            pass  # a build without app rollback: nothing to cancel

    def status(self):
        return {"running": self.running(), "state": None}
