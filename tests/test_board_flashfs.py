"""The emulated flash is a LittleFS2 image that survives a power cut: SIGKILL the board in
the middle of writes, and the filesystem still mounts with every completed file intact."""
import subprocess
import threading

from host_tools import boards
from host_tools.emuboard import EmulatedBoard

WRITER = """
import os
data = b'0123456789abcdef' * 256
with open('/done.bin', 'wb') as f:
    f.write(data)
print('WRITING')
i = 0
while True:
    with open('/churn%d.bin' % (i % 4), 'wb') as f:
        for _ in range(8):
            f.write(data)
    i += 1
"""

CHECK = """
import os, hashlib, binascii
print('FILES', sorted(os.listdir('/')))
print('DONE', binascii.hexlify(hashlib.sha256(open('/done.bin', 'rb').read()).digest()).decode())
for n in os.listdir('/'):
    if n.startswith('churn'):
        open('/' + n, 'rb').read()
with open('/after.txt', 'w') as f:
    f.write('ok')
print('AFTER', open('/after.txt').read())
"""


def test_kill_during_flash_write_keeps_the_filesystem(tmp_path):
    import hashlib
    expected = hashlib.sha256(b"0123456789abcdef" * 256).hexdigest()
    with EmulatedBoard(tmp_path) as b:
        for round_ in range(3):
            mark = b.mark()
            proc = subprocess.Popen([boards.mpremote_path(), "connect", b.repl, "resume", "exec", WRITER],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                b.wait_for(r"WRITING", since=mark)
                # let it get well into the churn writes, at a different point each round
                threading.Event().wait(0.05 + 0.1 * round_)
                b.kill()
                b.wait_for(r"reboot: killed", since=mark)
            finally:
                proc.kill()
                proc.wait()
            out = b.exec(CHECK)
            assert "DONE " + expected in out, out
            assert "AFTER ok" in out
        console = b.console_text()
        assert console.count("flash: formatted") == 1  # the first boot only
        assert "reformatting" not in console
        assert b.restarts == 3
