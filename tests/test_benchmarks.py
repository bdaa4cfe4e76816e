"""The benchmark harness measures what it says: a case's own time and peak memory, failures as results."""

import pytest

from benchmarks.harness import measure, ratio, table


def test_inputs_are_not_counted_but_the_cases_own_allocations_are():
    copy = measure("benchmarks.sinkhorn:copy_case", repeats=1)  # 2 GiB of inputs, allocates nothing when run
    assert copy["seconds"] > 0 and copy["peak_mib"] < 64
    klot = measure("benchmarks.scale:blockwise_case", n=4096, repeats=1, warmup=False)
    # one float32 kernel (4096^2 x 4 bytes = 64 MiB) must exist while a plan is solved
    assert 64 <= klot["peak_mib"] < 1024


def test_a_failing_case_is_a_result_not_a_crash():
    result = measure("benchmarks.klot:klot_case", impl="no-such-impl", n=8, repeats=1)
    assert "ValueError" in result["error"]
    assert ratio(result, {"seconds": 1.0}, "seconds") is None


@pytest.mark.parametrize("rows", [[["1", "2"]], []])
def test_tables_are_markdown(rows):
    lines = table(["a", "b"], rows).splitlines()
    assert lines[:2] == ["| a | b |", "|---|---|"] and len(lines) == 2 + len(rows)
