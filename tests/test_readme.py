"""The README's Python example runs as written (in a temporary folder: it saves a model to ``aligned/``)."""

import ast
import re
from pathlib import Path

from sotalign import AlignConfig

ROOT = Path(__file__).resolve().parents[1]


def python_api_example() -> str:
    section = ROOT.joinpath("README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_api_example(), "README.md (Python API)", "exec"), {})
    assert (tmp_path / "aligned").is_dir()
    *klot_losses, scores = capsys.readouterr().out.strip().splitlines()
    defaults = AlignConfig()  # one line per log_every steps of the default run
    assert len(klot_losses) == defaults.steps // defaults.log_every
    assert all(float(line.split()[1]) >= 0 for line in klot_losses)  # step, loss/klot
    scores = ast.literal_eval(scores)
    assert 0 < scores["mean_recall_at_1"] <= 100  # the printed retrieval scores of the trained model


COLUMN_METHODS = {"teacher": "teacher", "SAIL": "sail", "SOTAlign": "sotalign"}  # README column -> report row
CELL = re.compile(r"(\d+\.\d) ± (\d+\.\d)")


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of a markdown text as rows of cells (the header first, the --- row dropped)."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip().strip("*") for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def reproduced_rows() -> tuple[list[str], list[list[str]]]:
    section = ROOT.joinpath("README.md").read_text().split("## Reproducing the paper", 1)[1].split("\n## ", 1)[0]
    [table] = markdown_tables(section)
    return table[0], table[1:]


def report_means(report: str, method: str) -> set[str]:
    """The ``mean R@1`` cells of ``method``'s rows in every table of a report, read by column name."""
    means = set()
    for table in markdown_tables(report):
        header = table[0]
        if "mean R@1" in header:
            means |= {row[header.index("mean R@1")] for row in table[1:] if row[0] == method}
    return means


def test_the_readme_results_are_the_reports_numbers():
    """Each benchmark row of README's results table is read off the report it links (the teacher, SAIL and
    SOTAlign rows, by mean R@1), the paper row off sotalign.experiments.paper_results, and the gain over
    SAIL agrees with the two cells it compares (within their rounding)."""
    from sotalign.experiments.paper_results import TABLE4

    header, rows = reproduced_rows()
    columns = {label: next(i for i, h in enumerate(header) if h.startswith(label)) for label in COLUMN_METHODS}
    gain = header.index("SOTAlign vs SAIL")
    linked = [row for row in rows if re.match(r"\[.+\]\((docs/results/.+\.md)\)", row[0])]
    assert len(linked) == 3, rows
    for row in linked:
        report = ROOT.joinpath(re.match(r"\[.+\]\((.+)\)", row[0])[1]).read_text()
        for label, method in COLUMN_METHODS.items():
            assert CELL.fullmatch(row[columns[label]]), row
            assert row[columns[label]] in report_means(report, method), (row[0], label, row[columns[label]])
    paper = next(row for row in rows if row[0].startswith("paper"))
    assert (
        float(paper[columns["SAIL"]]) == TABLE4["sail"][0]
        and float(paper[columns["SOTAlign"]]) == TABLE4["sotalign"][0]
    )
    for row in rows:
        sail, sotalign = (float(row[columns[label]].split(" ± ")[0]) for label in ("SAIL", "SOTAlign"))
        low, high = (sotalign - 0.05) / (sail + 0.05), (sotalign + 0.05) / (sail - 0.05)  # what rounding allows
        shown = int(row[gain].removeprefix("+").removesuffix("%"))
        assert 100 * (low - 1) - 0.5 <= shown <= 100 * (high - 1) + 0.5, (row[0], shown, low, high)


def test_every_relative_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#]+)\)", ROOT.joinpath("README.md").read_text())
    relative = [link for link in links if "://" not in link]
    assert relative and not [link for link in relative if not ROOT.joinpath(link).exists()]
