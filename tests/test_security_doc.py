"""docs/security.md names the test behind each defence as `file::test`; every one named
must exist, so the risk table cannot point at a test that was renamed or removed."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_test_the_risk_table_names_exists():
    with open(os.path.join(ROOT, "docs", "security.md")) as f:
        text = f.read()
    last_file = None
    named = []
    # `tests/x.py::test_y` names a file; a following `::test_z` means the same file
    for m in re.finditer(r"`(tests/[\w/]+\.py)?(::(test_\w+))?`", text):
        path, name = m.group(1), m.group(3)
        if path:
            last_file = path
        if path or name:
            named.append((path or last_file, name))
    assert len(named) > 25
    for path, name in named:
        full = os.path.join(ROOT, path)
        assert os.path.exists(full), path
        if name:
            with open(full) as f:
                src = f.read()
            assert re.search(r"^(async )?def %s\(" % name, src, re.M), "%s::%s" % (path, name)
