"""Benchmark harness: `make bench`.

Runs every bench/bench_*.py module's `run()`, which returns a list of result dicts:
    {"name": str, "value": number, "unit": str,
     "goal": str (optional, e.g. ">= 345000"), "ok": bool (optional), "note": str (optional)}
Writes them all to bench/results.json (with the machine and time) and prints a table.
A benchmark that fails is reported as an error row; the others still run.
Usage: python bench/run.py [NAME_SUBSTRING ...]
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
        for r in results:
            r["suite"] = suite
            rows.append(r)
        print("bench: %s done in %.1fs" % (suite, time.time() - started), file=sys.stderr)
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "cpus": os.cpu_count()},
           "results": rows}
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    print_table(rows)
    print("\nwritten: bench/results.json")
    return 0


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
