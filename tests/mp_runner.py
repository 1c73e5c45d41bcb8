# Runs one firmware test module under MicroPython and reports each test as a JSON line.
# Usage: micropython tests/mp_runner.py FIRMWARE_DIR TEST_MODULE_PATH [NAME ...]
# Plain functions named test_*; `async def` tests are run with asyncio.run. Output lines
# start with @@MPTEST so that prints from the code under test do not confuse the parser.
# A test that cannot check anything under MicroPython raises an exception of a class named
# SkipTest (its own; MicroPython has no unittest): reported as skipped, with its message.
import sys
import io
import json
import gc


def _load(path):
    slash = path.rfind("/")
    folder, fname = path[:slash], path[slash + 1:]
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return __import__(fname[:-3])


def _report(name, ok, tb, free, skip=None):
    print("@@MPTEST " + json.dumps({"name": name, "ok": ok, "tb": tb, "mem_free": free, "skip": skip}))


def main():
    firmware = sys.argv[1]
    sys.path.insert(0, firmware)
    try:
        module = _load(sys.argv[2])
    except BaseException as exc:  # import failure: report it against every test
        buf = io.StringIO()
        sys.print_exception(exc, buf)
        _report("<import>", False, buf.getvalue(), gc.mem_free())
        return
    wanted = sys.argv[3:]
    names = sorted(n for n in dir(module) if n.startswith("test_"))
    print("@@MPLIST " + json.dumps(names))
    for name in names:
        if wanted and name not in wanted:
            continue
        fn = getattr(module, name)
        gc.collect()
        try:
            result = fn()
            if result is not None and hasattr(result, "send"):
                import asyncio
                asyncio.run(result)
            _report(name, True, "", gc.mem_free())
        except BaseException as exc:
            if type(exc).__name__ == "SkipTest":
                _report(name, True, "", gc.mem_free(), skip=str(exc) or "skipped under MicroPython")
                continue
            buf = io.StringIO()
            sys.print_exception(exc, buf)
            _report(name, False, buf.getvalue(), gc.mem_free())


main()
