# Sent by `ppmid emulate` before a run (host_tools/emulate.py, unless --keep-journal): a
# fresh gateway, without the relay journal (anti-replay counters, commands) of an earlier run.
import os

for p in ('/relay/relay.jnl', '/relay/relay.jnl.new', '/relay/relay.jnl.bad'):
    try:
        os.remove(p)
    except OSError:
        pass
