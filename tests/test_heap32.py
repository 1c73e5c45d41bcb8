"""The 32-bit heap gauge's machinery (bench/heap32, docs/memory.md) on a small case: the
webassembly MicroPython boots under node, loads .mpy files compiled by mpy-cross, and its
figures are sane. No budget here: the goals are judged by `make bench` (bench_heap32.py)."""
import json
import subprocess
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from heap32 import gauge as G  # noqa: E402


@pytest.fixture(scope="module")
def installed():
    try:
        G.check_installed()
    except G.GaugeError as exc:
        pytest.fail(str(exc))  # make setup installs it: missing is a set-up fault, not a skip


def _compiled(tmp_path, sources):
    pkg = tmp_path / "probe"
    pkg.mkdir()
    for name, text in sources.items():
        (pkg / name).write_text(text)
    files, skipped = G.compile_tree(str(tmp_path), "probe")
    return files, skipped


def test_a_module_holding_a_known_buffer_shows_at_least_its_size(installed, tmp_path):
    files, _ = _compiled(tmp_path, {"__init__.py": "", "big.py": "BUF = bytearray(20000)\n",
                                    "small.py": "X = 1\n"})
    figs = G.import_figures(files, ["probe.big", "probe.small"])
    # the gauge's resolution is ~1 KB (docs/memory.md: the port's JS proxies come and go)
    assert figs["probe.big"]["own"] >= 20000 - G.RESOLUTION
    assert figs["probe.big"]["own"] < 20000 + 4096  # the module object, its globals, the bytecode
    assert 0 < figs["probe.small"]["own"] < 2048
    assert figs["probe.big"]["own"] - figs["probe.small"]["own"] >= 20000 - 2 * G.RESOLUTION
    assert "probe" in figs["probe.big"]["loaded"]


def test_garbage_is_not_counted(installed, tmp_path):
    # the port collects only between turns of the event loop; the gauge must measure there
    files, _ = _compiled(tmp_path, {"__init__.py": "",
                                    "churn.py": "for i in range(2000):\n    x = bytearray(100)\n"})
    figs = G.import_figures(files, ["probe.churn"])
    assert figs["probe.churn"]["own"] < 4096


def test_a_missing_module_is_a_clear_failure(installed, tmp_path):
    files, _ = _compiled(tmp_path, {"__init__.py": ""})
    figs = G.import_figures(files, ["probe.nosuch"])
    assert "error" in figs["probe.nosuch"]
    assert "ImportError" in figs["probe.nosuch"]["error"] and "probe.nosuch" in figs["probe.nosuch"]["error"]


def test_viper_code_is_left_to_its_plain_fallback(installed, tmp_path):
    files, skipped = _compiled(tmp_path, {"__init__.py": "", "fast.py": (
        "import micropython\n@micropython.viper\ndef f(x: int) -> int:\n    return x + 1\n")})
    assert "probe/fast.py" in skipped
    assert "/probe/__init__.mpy" in files


def test_firmware_modules_load_as_mpy_in_the_32_bit_port(installed):
    files, skipped = G.compile_tree(G.FIRMWARE_DIR)
    assert any(k.endswith("_ash_fast.py") for k in skipped)
    figs = G.import_figures(files, ["ppmid.errors", "ppmid.gbcs.gbt"])
    assert figs["ppmid.errors"]["own"] > 0
    assert figs["ppmid.gbcs.gbt"]["total"] > figs["ppmid.gbcs.gbt"]["own"] > 0


def test_the_firmware_lies_where_a_board_has_it_and_names_itself_once(installed, tmp_path):
    # at the filesystem's root, found through sys.path's '' as on a board after `ppmid
    # deploy`: __file__ is the board's, the same text as the .mpy's source name, so one
    # interned name per module (docs/memory.md, session 9); here against a .mpy compiled
    # with the .py name, which interns both
    files, _ = _compiled(tmp_path, {"__init__.py": "", "one.py": "def f(x):\n    return x + ''\n"})
    import subprocess
    from host_tools import boards
    two = subprocess.run([boards.mpy_cross_binary(), *G.MPY_OPTS, "-o", "/dev/stdout", "-s", "probe/one.py",
                          str(tmp_path / "probe" / "one.py")], capture_output=True, check=True).stdout
    files["/probe/two.mpy"] = two
    src = ("import micropython\nimport probe\nprint('@@NAMES before')\nmicropython.qstr_info()\n"
           "import probe.one\nprint('@@NAMES one')\nmicropython.qstr_info()\n"
           "import probe.two\nprint('@@NAMES two')\nmicropython.qstr_info()\n"
           "print('@@FILE', probe.one.__file__)\n"
           "try:\n    probe.one.f(1)\nexcept TypeError as e:\n    sys.print_exception(e)\n")
    result = G.run_jobs([(files, G.script(src))])[0]
    assert result["ok"], result["error"]
    assert "@@FILE probe/one.mpy" in result["lines"]
    assert '  File "probe/one.mpy", line 1, in f' in result["lines"]
    at = G.names_at(result)
    # the same code: probe.two interns one name more, its .py source name
    assert (at["two"]["names"] - at["one"]["names"]) - (at["one"]["names"] - at["before"]["names"]) == 1


def test_the_frozen_measurement_says_what_is_missing(tmp_path, monkeypatch):
    # bench/heap32/frozen32.py (docs/memory.md, "Frozen"): without a MicroPython tree it
    # returns a row that says why it did not run, and builds nothing
    from heap32 import frozen32
    monkeypatch.delenv("MICROPY_DIR", raising=False)
    rows = frozen32.run()
    assert len(rows) == 1 and "MICROPY_DIR is not set" in rows[0]["skipped"]
    (tmp_path / "ports" / "unix").mkdir(parents=True)
    (tmp_path / "ports" / "unix" / "Makefile").write_text("")
    monkeypatch.setenv("MICROPY_DIR", str(tmp_path))
    rows = frozen32.run()
    assert "has no mpy-cross/Makefile" in rows[0]["skipped"] and "value" not in rows[0]


def test_the_pool_model_matches_the_port_for_the_names_a_module_interns(installed, tmp_path):
    # pool_bytes() is what the gauge's "names" row models a board with: check it against
    # the port's own count (qstr_info: the pools' gc_nbytes plus the text) before and after
    # a module that uses 300 names nobody else does
    body = "".join("def f%d_%s(): pass\n" % (i, "x" * (i % 7)) for i in range(300))
    files, _ = _compiled(tmp_path, {"__init__.py": "", "names300.py": body})
    src = ("import micropython\nprint('@@NAMES before')\nmicropython.qstr_info()\n"
           "import probe.names300\nprint('@@NAMES after')\nmicropython.qstr_info()\n")
    result = G.run_jobs([(dict(files), G.script(src))])[0]
    assert result["ok"], result["error"]
    at = G.names_at(result)
    before, after = at["before"], at["after"]
    assert after["names"] - before["names"] >= 300
    assert before["total"] - before["text"] == G.pool_bytes(before["names"])
    assert after["total"] - after["text"] == G.pool_bytes(after["names"])


def test_pool_bytes_follows_the_doubling_pools():
    assert G.pool_bytes(0) == 0
    assert G.pool_bytes(20) == 176            # 24 + 20 * 7 = 164, in 16-byte blocks
    assert G.pool_bytes(21) == 176 + 304      # a second pool of 40 entries
    assert G.pool_bytes(1260) == G.pool_bytes(1241)      # six pools: 20 + 40 + ... + 640
    assert G.pool_bytes(1261) - G.pool_bytes(1260) == 8992   # the seventh, 1,280 entries


def test_names_report_refuses_a_run_without_its_samples():
    with pytest.raises(G.GaugeError):
        G.names_report({"lines": ["@@NAMES base", "qstr pool: n_pool=1, n_qstr=5, n_str_data_bytes=30, "
                                  "n_total_bytes=206"]}, "ready")


def test_the_app_boots_as_an_esp32_with_its_board_code_counted(installed):
    # the app scenarios boot through firmware/main.py on the ESP32 board code (docs/memory.md
    # "Session 9, the gauge counts the board and main.py"): nothing of the firmware is
    # loaded at the baseline, so the board module and main.py's names are in the figure
    files, _ = G.compile_tree(G.FIRMWARE_DIR)
    esp32, standin = G.run_jobs([G.app_job(files, G.flash_files(), False),
                                 G.app_job(files, G.flash_files(), False, esp32=False)])
    assert esp32["ok"], esp32["error"]
    assert standin["ok"], standin["error"]
    ready = esp32["out"]["READY"][0]
    G.check_boot(ready)
    assert ready["at_base"] == []
    # the running Board's module stays; the board package (load, read_definition) is
    # dropped with the boot-only modules once the app runs
    assert "ppmid.board.esp32" in ready["modules"] and "ppmid.board" not in ready["modules"]
    # main.py's update pointer was asked, and what it loaded dropped before the app
    assert not any(m.startswith("ppmid.update") for m in ready["modules"])
    # main.py's once-per-boot code (the choice, the start) is ppmid.main_start's, gone
    # before the app runs; main.py keeps only its _main
    assert "_main" in ready["main"] and "_choose" not in ready["main"]
    assert "ppmid.main_start" not in ready["modules"]
    # boot.py ran first, in the same __main__: what it leaves there is only its import of
    # micropython (no install to finish); the port has no alloc_emergency_exception_buf,
    # so the gauge holds the 100 bytes an ESP32 keeps (112 in 16-byte blocks)
    assert ready["boot"] == ["__name__", "micropython"]
    assert ready["emergency_buf"] == 112
    # the banner names the board from /board.json, not the stand-in
    assert any(line.startswith("PPMID ready:") and "board=%s" % G.ESP32_BOARD in line for line in esp32["lines"])
    # the stand-in board's boot loads no board module: the difference holds at least the
    # ESP32 board module by itself
    std = standin["out"]["READY"][0]
    assert "ppmid.board.esp32" not in std["modules"]
    own = G.import_figures(files, ["ppmid.board.esp32"])["ppmid.board.esp32"]["own"]
    assert ready["bytes"] - std["bytes"] >= own - G.RESOLUTION


def test_a_boot_that_is_not_an_esp32_s_is_refused():
    ok = {"at_base": [], "boot": ["__name__", "micropython"], "main": ["_main"], "modules": ["ppmid.board.esp32"]}
    G.check_boot(ok)
    for bad in (dict(ok, at_base=["ppmid.errors"]), dict(ok, boot=None), dict(ok, main=None),
                dict(ok, modules=["ppmid.board"]), dict(ok, modules=ok["modules"] + ["ppmid.board.emulated"])):
        with pytest.raises(G.GaugeError):
            G.check_boot(bad)

@pytest.fixture(scope="module")
def firmware_files(installed):
    return G.compile_tree(G.FIRMWARE_DIR)[0]


def test_the_app_scenario_is_a_connected_gateway_in_the_field(firmware_files):
    # docs/memory.md, "Session 9, the gauge measures a connected gateway": ready means Wi-Fi
    # up, MQTT connected and subscribed over the stand-in TLS, the clock set by SNTP (its
    # server's name looked up); the command comes from the broker through the connected
    # client's reader, is PUBACKed, and its statuses are PUBACKed
    flash = G.flash_files(field=True)
    flash["/cmd.json"] = G.command_json(4096)[0]
    r = G.run_jobs([G.app_job(firmware_files, flash, False, "/cmd.json")])[0]
    assert r["ok"], r["error"]
    ready, cmd = r["out"]["READY"][0], r["out"]["COMMAND"][0]
    got, sent = ready["broker_got"], ready["broker_sent"]
    assert ready["field"] and ready["mqtt"] == "online" and ready["clock"] == "sntp"
    assert (got[1], sent[2]) == (1, 1)           # one CONNECT, one CONNACK
    assert got[8] == 1 and sent[9] == 1          # SUBSCRIBE, SUBACK
    assert sent[4] >= 2                          # state and info (QoS 1) PUBACKed
    assert ready["sntp"] >= 1 and ready["dns"] >= 1  # pool.ntp.org looked up, then asked
    assert "ppmid.sntp_task" in ready["modules"]
    # the connection's start, the lookup and the sync were loaded and dropped again
    for gone in ("ppmid.mqtt.handshake", "ppmid.dns_lookup", "ppmid.dns", "ppmid.sntp"):
        assert gone not in ready["modules"]
    assert cmd["accepted"] == 1 and cmd["counters"]["relayed"] == 1
    assert cmd["broker_sent"][3] == 1 and cmd["broker_got"][4] == 1   # the command PUBLISHed, PUBACKed
    # its statuses: the relay counts one once publish() returned, i.e. once PUBACKed
    assert cmd["published"] >= 1 and cmd["broker_sent"][4] - sent[4] >= cmd["published"]
    # the live heap, the command's buffer included: its peak above what it started from
    assert cmd["peak"] >= cmd["start"] + cmd["payload"] - G.RESOLUTION


def test_a_gateway_whose_wifi_is_down_stays_offline_and_a_field_run_without_its_broker_fails_clearly(
        firmware_files):
    # without the Wi-Fi section nothing goes on the network (frag.py's runs): the figures
    # are those of an offline gateway, and the job says so in its READY line
    plain = G.run_jobs([G.app_job(firmware_files, G.flash_files(), False)])[0]
    assert plain["ok"], plain["error"]
    ready = plain["out"]["READY"][0]
    # nothing set the clock: no SNTP ran. The ESP32 board code reads the port's clock, which
    # is the host's, as an RTC kept across a soft reset ("rtc"); the stand-in board's says
    # "unset" as after a power cut (docs/memory.md, "Session 9, the gauge counts the board")
    assert not ready["field"] and ready["mqtt"] == "wifi-down" and ready["clock"] in ("unset", "rtc")
    assert not any(ready["broker_got"]) and ready["sntp"] == 0 and ready["dns"] == 0
    # a field flash whose broker is not there: the job fails saying what it waited for,
    # rather than taking an unconnected gateway's figures as a connected one's
    flash = G.flash_files(field=True)
    cfg = json.loads(flash[G.FLASH + "/config.json"])
    cfg["broker"]["port"] = 1883  # nothing served there: the connection fails, as with no route
    flash[G.FLASH + "/config.json"] = json.dumps(cfg).encode()
    fs, src = G.app_job(firmware_files, flash, False)
    # with no broker nothing can connect: 8 s of waiting say what the gauge's 20 s would
    # (they cost 20 s of this test), and only this job's script waits less
    wait = "what='MQTT to be connected and the clock synced')"
    assert src.count(wait) == 1
    src = src.replace(wait, "timeout_ms=8000, " + wait)
    r = G.run_jobs([(fs, src)])[0]
    assert not r["ok"] and "MQTT to be connected and the clock synced" in r["error"]


def _ssl_standin_holding_more(context_extra, socket_extra):
    # the stand-in ssl with each SSLContext / SSLSocket `extra` bytes larger: what a run
    # reads more is what the firmware holds of them (ready: the context from boot, the
    # socket while connected)
    with open(os.path.join(G.STANDINS, "ssl.py")) as f:
        src = f.read()
    for name, extra in (("CONTEXT_BYTES", context_extra), ("SOCKET_BYTES", socket_extra)):
        line = next(ln for ln in src.splitlines() if ln.startswith(name + " = "))
        size = int(line.split("=")[1].split("#")[0])
        src = src.replace(line, "%s = %d" % (name, size + extra))
    return src.encode()


def test_the_tls_objects_are_held_as_on_a_board_the_context_from_boot_a_socket_while_connected(
        firmware_files):
    # docs/memory.md, "Session 9, the TLS objects on the GC heap": an ESP32 keeps the
    # SSLContext and each SSLSocket object on the MicroPython heap; the stand-in allocates
    # their sizes and holds them as long as the firmware holds the objects
    ctx_extra, sock_extra = 32768, 16384
    bigger = {G.LIB + "/ssl.py": _ssl_standin_holding_more(ctx_extra, sock_extra)}
    field, offline = G.flash_files(field=True), G.flash_files()
    jobs = []
    for flash in (field, offline):
        fs, src = G.app_job(firmware_files, flash, False)
        jobs += [(fs, src), (dict(fs, **bigger), src)]
    runs = G.run_jobs(jobs)
    for r in runs:
        assert r["ok"], r["error"]
    field_std, field_big, off_std, off_big = (r["out"]["READY"][0] for r in runs)
    assert field_big["mqtt"] == "online" and off_big["mqtt"] == "wifi-down"
    # connected: the context and the connection's socket
    assert abs(field_big["bytes"] - field_std["bytes"] - ctx_extra - sock_extra) <= G.RESOLUTION
    # offline: the context made at boot is kept for the connection to come; no socket
    assert abs(off_big["bytes"] - off_std["bytes"] - ctx_extra) <= G.RESOLUTION


def _h32_holding_more(mount_extra, file_extra):
    # the harness with the LittleFS2 stand-ins `extra` bytes larger: what a run reads more
    # is what the board's flash holds (the mount from boot, a file's cache while open)
    with open(os.path.join(G.HERE, "h32.py")) as f:
        src = f.read()
    for name, extra in (("LFS_MOUNT_BYTES", mount_extra), ("LFS_FILE_BYTES", file_extra)):
        line = next(ln for ln in src.splitlines() if ln.startswith(name + " = "))
        size = int(line.split("=")[1].split("#")[0])
        src = src.replace(line, "%s = %d" % (name, size + extra))
    return src.encode()


def test_the_littlefs_mount_and_the_journal_s_open_file_are_held_as_on_a_board(firmware_files):
    # docs/memory.md, "Session 9, LittleFS on the GC heap": an ESP32's _boot.py mounts the
    # flash as LittleFS2 (its object and buffers on the GC heap for the boot's life) and each
    # file open on it holds an object with its cache: the journal opens its file with the
    # first command it keeps, and keeps it open
    # the extras dwarf the gauge's noise (one-sided, ~1 KB per figure: two figures apart)
    mount_extra, file_extra = 16384, 8192
    flash = G.flash_files()
    flash["/cmd.json"] = G.command_json(4096)[0]
    fs, src = G.app_job(firmware_files, flash, False, "/cmd.json")
    bigger = dict(fs, **{G.LIB + "/_h32.py": _h32_holding_more(mount_extra, file_extra)})
    runs = G.run_jobs([(fs, src), (bigger, src)])
    for r in runs:
        assert r["ok"], r["error"]
    (std, std_cmd), (big, big_cmd) = ((r["out"]["READY"][0], r["out"]["COMMAND"][0]) for r in runs)
    assert std["lfs_mount"] == 624 and big["lfs_mount"] == 624 + mount_extra
    # at ready no command was kept yet: no file is open; the boot's were closed again
    assert std["lfs_open"] == [] and big["lfs_open"] == []
    assert abs(big["bytes"] - std["bytes"] - mount_extra) <= 2 * G.RESOLUTION
    # after the command the journal's file is open, and only it
    assert std_cmd["counters"]["relayed"] == 1
    assert [p.rsplit("/", 1)[-1] for p in std_cmd["lfs_open"]] == ["relay.jnl"]
    assert abs(big_cmd["after"] - std_cmd["after"] - mount_extra - file_extra) <= 2 * G.RESOLUTION


def test_the_command_comes_once_the_app_s_reaction_to_the_han_running_is_over(firmware_files):
    # docs/memory.md, "Session 10, the command after the HAN settles": putting the HAN in
    # the running state makes the app publish its info (mqtt.info_follow, paced) and read
    # the CH clock (zigbee.chclock, at the clock loop's next tick); a board's HAN runs for
    # minutes before a command, so the scenario sends it once both are over, observed
    flash = G.flash_files(field=True)
    flash["/cmd.json"] = G.command_json(4096)[0]
    fs, src = G.app_job(firmware_files, flash, False, "/cmd.json")
    wait = "settled = await settling.over()"
    assert wait in src
    # a reaction that is not over in time fails the job, naming what it waited for, rather
    # than taking the figures with it under way (the info goes out SETTLE_MS, 250 ms, later)
    r, short = G.run_jobs([(fs, src), (fs, src.replace(wait, "settled = await settling.over(50)"))])
    assert r["ok"], r["error"]
    assert not short["ok"] and "the app's reaction to the HAN running to be over" in short["error"]
    cmd, s = r["out"]["COMMAND"][0], r["out"]["SETTLED"][0]
    assert s["online"] and s["info_loaded"] and s["ch_clock_reads"] == 1 and s["frames"] == 0
    # right before the command's first sample: the info was PUBLISHed, once, and PUBACKed,
    # and neither module of the reaction was still loaded
    assert s["got"][3] - s["got_before"][3] == 1 == s["publishes"]
    assert s["sent"][4] - s["sent_before"][4] == 1 == s["pubacks"]
    assert "ppmid.mqtt.info_follow" not in s["loaded"] and "ppmid.zigbee.chclock" not in s["loaded"]
    # what the broker got after that is the command's: its statuses
    assert cmd["broker_got"][3] - s["got"][3] == cmd["published"] >= 1
    assert cmd["accepted"] == 1 and cmd["counters"]["relayed"] == 1


# runs in the unix port: the live heap an import of probe.code takes from `where`, and where
# the module came from; for "rom", the image is read and mounted first (outside the figure)
_ROMFS_IMPORT = """
import gc, sys, vfs
if WHERE == 'rom':
    _img = open(IMAGE, 'rb').read()
    vfs.mount(vfs.VfsRom(_img), '/rom')
    sys.path[:] = ['/rom']
else:
    sys.path[:] = [WHERE]
gc.collect()
a0 = gc.mem_alloc()
import probe.code
gc.collect()
print(gc.mem_alloc() - a0, probe.code.__file__, probe.code.f7(3))
"""


def test_a_romfs_image_of_the_mpy_files_is_imported_in_place(tmp_path):
    # frozen32's ROMFS scenario (docs/memory.md, "ROMFS") rests on two facts of the real
    # MicroPython, checked here with mpremote's image writer: a package's .mpy files in a
    # ROMFS image import from /rom (and run), and their bytecode stays in the image: the
    # import takes a fraction of the heap that the same files take from a filesystem
    from heap32 import frozen32
    # 20 functions of ~40 lines: their bytecode, not their names, is most of the module
    lines = "".join("    x = (x * %d + %d) %% 65521\n" % (k + 3, k) for k in range(40))
    body = "".join("def f%d(x):\n%s    return x\n" % (i, lines) for i in range(20))
    files, _ = _compiled(tmp_path, {"__init__.py": "", "code.py": body})
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(mp):
        pytest.skip("no micropython in the venv: run make setup")
    image = tmp_path / "probe.romfs"
    image.write_bytes(frozen32.romfs_image(files, "probe"))
    tree = tmp_path / "tree"
    for path, data in files.items():
        (tree / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tree / path.lstrip("/")).write_bytes(data)
    figures = {}
    for w in ("dir", "rom"):
        script = tmp_path / ("imp_%s.py" % w)
        script.write_text("WHERE = %r\nIMAGE = %r\n" % (str(tree) if w == "dir" else "rom", str(image)) + _ROMFS_IMPORT)
        p = subprocess.run([mp, str(script)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        used, file, answer = p.stdout.split()
        x = 3
        for k in range(40):
            x = (x * (k + 3) + k) % 65521
        assert answer == str(x)   # f7(3) ran
        figures[w] = (int(used), file)
    assert figures["dir"][1].startswith(str(tree)) and figures["rom"][1].startswith("/rom/probe/"), figures
    # the 20 functions' bytecode is copied into the heap from a file, not from the image
    assert figures["rom"][0] * 4 < figures["dir"][0], figures
