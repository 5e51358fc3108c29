import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TIMES = {}  # (group, name) -> best seconds, filled by the benchmarks


def pytest_terminal_summary(terminalreporter):
    """Speed-ups of facenms over each baseline in the same run, as markdown."""
    if not TIMES:
        return
    tr = terminalreporter
    tr.section("facenms speed-up over baselines (same run)")
    for group in sorted({g for g, _ in TIMES}):
        rows = {n: t for (g, n), t in TIMES.items() if g == group}
        ref = rows.get("facenms fp32")
        tr.write_line("| %s | time (s) | faces/s | facenms fp32 faster by |" % group)
        tr.write_line("|---|---:|---:|---:|")
        faces = int(os.environ.get("FACENMS_BENCH_FACES", 200_000))
        for name, t in sorted(rows.items(), key=lambda kv: kv[1]):
            tr.write_line("| %s | %.3f | %s | %s |" % (
                name, t, "{:,.0f}".format(faces / t),
                "%.1fx" % (t / ref) if ref else "-"))
        tr.write_line("")


@pytest.fixture
def record():
    def rec(benchmark, group, name):
        benchmark.group = group
        TIMES[(group, name)] = benchmark.stats.stats.min
    return rec
