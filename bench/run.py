"""Benchmark harness: `make bench`.

Runs every bench/bench_*.py module's `run()`, which returns a list of result dicts:
    {"name": str, "value": number, "unit": str,
     "goal": str (optional, e.g. ">= 345000"), "ok": bool (optional), "note": str (optional)}
Writes them all to bench/results.json (with the machine and time) and prints a table.
A benchmark that fails is reported as an error row; the others still run.
Usage: python bench/run.py [NAME_SUBSTRING ...]
A run of some suites replaces only their rows in bench/results.json: the other suites'
rows stay, each with the time it was measured ("when" per row), so one suite run again
does not wipe the rest of a `make bench`.
"""
import importlib.util
import json
import os
import platform
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv):
    files = sorted(f for f in os.listdir(HERE) if f.startswith("bench_") and f.endswith(".py"))
    if argv:
        files = [f for f in files if any(a in f for a in argv)]
    rows = []
    for fname in files:
        suite = fname[6:-3]
        started = time.time()
        try:
            results = load(os.path.join(HERE, fname)).run()
        except Exception as exc:
            traceback.print_exc()
            results = [{"name": "error", "value": None, "unit": "", "ok": False,
                        "note": "%s: %s" % (type(exc).__name__, exc)}]
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for r in results:
            r["suite"] = suite
            r["when"] = when
            rows.append(r)
        print("bench: %s done in %.1fs" % (suite, time.time() - started), file=sys.stderr)
    path = os.path.join(HERE, "results.json")
    ran = set(f[6:-3] for f in files)
    kept = [r for r in previous_rows(path) if r.get("suite") not in ran] if argv else []
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "cpus": os.cpu_count()},
           "results": kept + rows}
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
    os.replace(path + ".tmp", path)
    if kept:
        print("bench: kept %d rows of suites not run now (%s)"
              % (len(kept), ", ".join(sorted(set(r["suite"] for r in kept)))), file=sys.stderr)
    print_table(rows)
    print("\nwritten: bench/results.json")
    return 0


def previous_rows(path):
    """The rows of an earlier run, [] when there is none or it cannot be read (a partial
    run then writes only its own rows)."""
    try:
        with open(path) as f:
            rows = json.load(f).get("results", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in rows if isinstance(r, dict)]


def fmt(v):
    if isinstance(v, float):
        return "%.4g" % v
    return str(v)


def print_table(rows):
    head = ("suite", "benchmark", "value", "unit", "goal", "met")
    table = [head] + [(r["suite"], r["name"], fmt(r.get("value")), r.get("unit", ""), r.get("goal", ""),
                       {True: "yes", False: "NO", None: ""}[r.get("ok")]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
