"""Result tables say how many seeds each cell averages when it is fewer than the table's fullest cell."""

from sotalign.experiments.results import format_table


def test_a_cell_missing_a_seed_says_so():
    rows = [{"method": "sail", "seed": s, "mean_recall_at_1": 10.0 + s} for s in (0, 1, 2)]
    rows += [{"method": "sotalign", "seed": s, "mean_recall_at_1": 20.0 + s} for s in (0, 2)]  # seed 1 missing
    lines = format_table(rows, ["mean_recall_at_1"]).splitlines()
    assert lines[2] == "| sail | 11.0 ± 1.0 |"  # all three seeds: nothing to say
    assert lines[3] == "| sotalign | 21.0 ± 1.4 (n=2) |"
    single = format_table([{"method": "teacher", "seed": 0, "mean_recall_at_1": 9.0}, *rows], ["mean_recall_at_1"])
    assert "| teacher | 9.0 (n=1) |" in single.splitlines()
