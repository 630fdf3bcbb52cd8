"""docs/ml-test-score.md stays true: it lists the rubric's 28 tests in order, every test
function it cites exists, points follow from each row's status, and the sums and the
final score (the minimum of the section sums, as the paper computes it) add up.

An audit that cites a renamed or deleted test, or adds a point without a test behind it,
fails here rather than misleading a reader.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ml-test-score.md"
SECTIONS = ("Data", "Model", "Infra", "Monitor")
POINTS = {"automated": 1.0, "manual": 0.5, "none": 0.0}
CITATION = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
ROW = re.compile(r"^\| (Data|Model|Infra|Monitor) (\d) \| (.+) \| (\w+) \| (.+) \| ([\d.]+) \|$")
SUM = re.compile(r"^\*\*(Data|Model|Infra|Monitor) sum: ([\d.]+)\*\*$")
TOTAL = re.compile(
    r"^\| (Data|Model|Infra|Monitor|all) \| (\d+) \| (\d+) \| (\d+) \|\s*([\d.]*)\s*\|$"
)
FINAL = re.compile(r"^\*\*ML Test Score: ([\d.]+)\*\*")


@cache
def defined_functions(path: str) -> frozenset[str]:
    """Names of the functions defined at module level or in classes of ``path``."""
    tree = ast.parse((REPO / path).read_text(), filename=path)
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def parse(text: str) -> dict:
    rows, sums, totals, finals = [], {}, {}, []
    for line in text.splitlines():
        if match := ROW.match(line):
            section, index, _, status, evidence, points = match.groups()
            rows.append((section, int(index), status, evidence, float(points)))
        elif match := SUM.match(line):
            sums[match.group(1)] = float(match.group(2))
        elif match := TOTAL.match(line):
            name, automated, manual, none, total = match.groups()
            totals[name] = (int(automated), int(manual), int(none), total)
        elif match := FINAL.match(line):
            finals.append(float(match.group(1)))
    return {"rows": rows, "sums": sums, "totals": totals, "finals": finals}


def problems(text: str) -> list[str]:
    """Everything wrong with the page, one line each; empty when it is consistent."""
    page = parse(text)
    rows, found = page["rows"], []
    expected = [(section, index) for section in SECTIONS for index in range(1, 8)]
    if [(section, index) for section, index, *_ in rows] != expected:
        found.append(f"rows {[(s, i) for s, i, *_ in rows]}; expected {expected}")

    for section, index, status, evidence, points in rows:
        name = f"{section} {index}"
        if status not in POINTS:
            found.append(f"{name}: status {status!r}; expected one of {sorted(POINTS)}")
            continue
        if points != POINTS[status]:
            found.append(
                f"{name}: {points:g} points for status {status}; expected {POINTS[status]:g}"
            )
        citations = CITATION.findall(evidence)
        if status == "automated" and not citations:
            found.append(f"{name}: automated but cites no tests/<file>.py::<function>")
        if status == "manual" and not LINK.search(evidence):
            found.append(f"{name}: manual but links to no page where the results are written")
        for path, function in citations:
            if not (REPO / path).is_file():
                found.append(f"{name}: cites {path}, which does not exist")
            elif function not in defined_functions(path):
                found.append(f"{name}: cites {path}::{function}, which {path} does not define")
        for target in LINK.findall(evidence):
            if "://" not in target and not (DOC.parent / target).exists():
                found.append(f"{name}: links to {target}, which does not exist")

    computed = {s: sum(r[4] for r in rows if r[0] == s) for s in SECTIONS}
    for section in SECTIONS:
        if page["sums"].get(section) != computed[section]:
            found.append(
                f"{section} sum: page says {page['sums'].get(section)}, rows add up to "
                f"{computed[section]:g}"
            )
        counts = tuple(
            sum(1 for r in rows if r[0] == section and r[2] == status) for status in POINTS
        )
        shown = page["totals"].get(section)
        if shown is None or shown[:3] != counts or float(shown[3] or "nan") != computed[section]:
            found.append(
                f"totals row {section}: {shown}; expected counts {counts}, "
                f"sum {computed[section]:g}"
            )
    overall = tuple(sum(1 for r in rows if r[2] == status) for status in POINTS)
    if page["totals"].get("all", (None,) * 3)[:3] != overall:
        found.append(f"totals row all: {page['totals'].get('all')}; expected counts {overall}")
    if page["finals"] != [min(computed.values())]:
        found.append(
            f"final score {page['finals']}; expected the minimum of the section sums, "
            f"{min(computed.values()):g}"
        )
    return found


def test_the_audit_page_is_consistent_and_cites_existing_tests():
    assert problems(DOC.read_text()) == []


def test_the_final_score_is_the_minimum_of_the_section_sums():
    page = parse(DOC.read_text())
    assert len(page["rows"]) == 28
    assert page["finals"] == [min(page["sums"][s] for s in SECTIONS)]
    # The paper's grades: 0.5 for a manual test, 1 for an automated one.
    assert {r[4] for r in page["rows"] if r[2] == "automated"} == {1.0}
    assert {r[4] for r in page["rows"] if r[2] == "manual"} <= {0.5}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            ("test_each_layer_of_one_prediction_can_be_inspected", "test_renamed_away"),
            "Infra 5: cites tests/audit/test_single_example.py::test_renamed_away, which "
            "tests/audit/test_single_example.py does not define",
        ),
        (
            ("`tests/audit/test_dependencies.py::", "`tests/audit/test_gone.py::"),
            "Monitor 1: cites tests/audit/test_gone.py, which does not exist",
        ),
        (("**Infra sum: 7**", "**Infra sum: 6**"), "Infra sum: page says 6.0, rows add up to 7"),
    ],
)
def test_a_wrong_page_is_caught(edit, message):
    """The checks fail on a page with a stale citation, a missing file or a wrong sum."""
    text = DOC.read_text()
    old, new = edit
    assert old in text
    assert message in problems(text.replace(old, new, 1))


def test_points_must_follow_the_status():
    """Half a point on an automated row, or a manual row without a written record, is
    caught."""
    text = DOC.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Infra 6 |"))
    half = text.replace(row, row[: row.rindex("| 1 |")] + "| 0.5 |")
    assert "Infra 6: 0.5 points for status automated; expected 1" in problems(half)
    row = next(line for line in text.splitlines() if line.startswith("| Model 1 |"))
    unlinked = text.replace(row, LINK.sub("]", row))
    assert "Model 1: manual but links to no page where the results are written" in problems(
        unlinked
    )


def test_the_final_score_line_must_be_the_minimum():
    text = DOC.read_text()
    (line,) = [line for line in text.splitlines() if FINAL.match(line)]
    wrong = text.replace(line, "**ML Test Score: 5.5** (the maximum, wrongly)")
    assert any(p.startswith("final score [5.5]") for p in problems(wrong))
