"""bench/run.py: a run of some suites replaces only their rows in results.json."""
import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _harness(tmp_path, values):
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(ROOT, "bench", "run.py"))
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    run.HERE = str(tmp_path)
    for suite, value in values.items():
        (tmp_path / ("bench_%s.py" % suite)).write_text(
            "def run():\n    return [{'name': '%s row', 'value': %r, 'unit': 'n'}]\n" % (suite, value))
    return run


def _rows(tmp_path):
    with open(tmp_path / "results.json") as f:
        return {r["name"]: (r["suite"], r["value"]) for r in json.load(f)["results"]}


def test_a_subset_run_keeps_the_other_suites_rows(tmp_path, capsys):
    run = _harness(tmp_path, {"alpha": 1, "beta": 2})
    assert run.main([]) == 0
    assert _rows(tmp_path) == {"alpha row": ("alpha", 1), "beta row": ("beta", 2)}
    run = _harness(tmp_path, {"alpha": 10, "beta": 20})
    assert run.main(["alpha"]) == 0
    assert _rows(tmp_path) == {"alpha row": ("alpha", 10), "beta row": ("beta", 2)}
    assert "kept 1 rows of suites not run now (beta)" in capsys.readouterr().err


def test_a_full_run_drops_rows_of_suites_that_are_gone(tmp_path):
    run = _harness(tmp_path, {"alpha": 1, "beta": 2})
    run.main([])
    os.remove(tmp_path / "bench_beta.py")
    run.main([])
    assert _rows(tmp_path) == {"alpha row": ("alpha", 1)}


def test_an_unreadable_earlier_file_is_replaced_not_a_crash(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    run = _harness(tmp_path, {"alpha": 3})
    assert run.previous_rows(str(tmp_path / "results.json")) == []
    assert run.main(["alpha"]) == 0
    assert _rows(tmp_path) == {"alpha row": ("alpha", 3)}
