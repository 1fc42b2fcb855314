"""The published KnowEdit tables shipped with kelocate, the report's comparison with them (cells side by side,
Spearman's rho of the method orderings) and the paper's findings as rules: each finding holds on the
published table it was read from."""

from __future__ import annotations

import pytest

from kelocate.studies.knowedit.published import (
    ALL,
    FINDINGS,
    beside_published,
    findings,
    kelocate_value,
    published_report,
    published_tables,
    spearman,
    studies_report,
)

TASKS = ("WikiData_recent", "ZsRE", "WikiBio", "WikiData_counterfact", "ConvSent", "Sanitation")


def test_every_shipped_table_is_complete_and_on_its_scale():
    tables = published_tables()
    assert {"paper_table4", "paper_table4_2024_02", "easyedit_2024_01", "paper_table5", "paper_table6"} <= set(tables)
    table4 = tables["paper_table4"]
    assert set(table4.cells) == set(TASKS) and table4.source["commit"]
    for task in TASKS:
        assert set(table4.cells[task]) == set(ALL)
        for method in ALL:
            cell = table4.cells[task][method]
            assert 0 <= cell["edit_succ"] <= 100 and 250 <= cell["fluency"] <= 800
            assert (cell["portability"] is None) == (task in ("WikiBio", "ConvSent", "Sanitation"))
    assert table4.value("ZsRE", "rome", "edit_succ") == 96.77  # one cell read by hand from the source
    assert tables["paper_table4_2024_02"].value("ZsRE", "rome", "edit_succ") == 96.57
    assert tables["paper_table5"].cells["ft-l"]["triviaqa"] == 34.60  # the cell the page's text confirms


@pytest.mark.parametrize("finding", FINDINGS, ids=lambda f: f.rule[:40])
def test_each_finding_holds_on_the_published_table_it_states(finding):
    ok, numbers = finding.check(published_tables()["paper_table4"].value)
    assert ok is True, numbers


def test_spearman_over_the_methods_both_sides_have():
    assert spearman({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": 20, "c": 30, "d": 0}) == (1.0, 3)
    assert spearman({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1}) == (-1.0, 3)
    assert spearman({"a": 1, "b": 2}, {"a": 1, "b": 2}) == (None, 2)  # too few to rank
    assert spearman({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 2, "c": 3})[0] is None  # one side does not vary


def table_like_published(scale: float) -> list[dict]:
    """An aggregated kelocate table whose easyedit columns are the published Table 4 / 100 (so every cell
    should print the published number again and every ordering agree)."""
    published = published_tables()["paper_table4"]
    rows = []
    for task in TASKS:
        for method in ALL:
            cell = published.cells[task][method]
            row = {"method": method, "task": task, "mode": "single", "cases": 10, "failed_units": 0,
                   "ee.edit": cell["edit_succ"] / scale, "ee.fluency": cell["fluency"] / scale}
            if task == "ConvSent":
                row |= {"ee.sentiment": cell["edit_succ"] / scale, "ee.kl": cell["locality"] / scale}
            else:
                row["ee.locality"] = cell["locality"] / scale
            if cell["portability"] is not None:
                row["ee.portability"] = cell["portability"] / scale
            rows.append(row)
    return rows


def test_the_report_prints_each_cell_beside_the_published_one_with_the_ordering_agreement():
    table = table_like_published(100.0)
    published = published_tables()["paper_table4"]
    assert kelocate_value(table, "easyedit", "ZsRE", "rome", "edit_succ") == pytest.approx(96.77)
    text = beside_published(table, "easyedit", published)
    assert "| ZsRE | ee.edit | " in text and "96.77 / 96.77" in text
    assert text.count("1.00 (8)") >= 16  # every task x metric row: the same ordering of 8 methods
    verdicts = findings(table, "easyedit", published)
    assert all(v["kelocate"] is True for v in verdicts)
    report = published_report(table)
    assert "The paper's findings" in report and "holds" in report and "paper_table5" in report


def test_a_kelocate_only_table_is_compared_as_a_ranking_and_missing_cells_are_not_measurable():
    table = [{"method": m, "task": "ZsRE", "mode": "single", "edit_tf": v, "locality_tf": 0.5}
             for m, v in (("rome", 0.9), ("ft-l", 0.2), ("ice", 0.5))]
    verdicts = {v["rule"]: v for v in findings(table, "kelocate", published_tables()["paper_table4"])}
    first = next(v for rule, v in verdicts.items() if rule.startswith("edit_succ(rome) > edit_succ(ft-l)"))
    assert first["kelocate"] is True and "ZsRE rome 90.00 vs ft-l 20.00" in first["kelocate_numbers"]
    assert first["published"] is True and "WikiBio: n/a" in first["kelocate_numbers"]
    sanitation = [v for v in verdicts.values() if "Sanitation" in v["rule"]][0]
    assert sanitation["kelocate"] is None  # no Sanitation rows: not measurable here


def test_a_trained_editor_named_by_its_training_task_stands_in_its_methods_column():
    table = [{"method": m, "task": "ZsRE", "mode": "single", "ee.edit": v}
             for m, v in (("rome", 0.9), ("mend@WikiData_counterfact", 0.7), ("ft-l", 0.5), ("ice", 0.6))]
    assert kelocate_value(table, "easyedit", "ZsRE", "mend", "edit_succ") == pytest.approx(70.0)
    text = beside_published(table, "easyedit", published_tables()["paper_table4"])
    assert "| rome | mend | ft-l |" in text and "| mend@" not in text  # one column, the method's
    assert "70.00 / 96.74" in text and "Trained editors: mend@WikiData_counterfact" in text
    two = table + [{"method": "mend@ZsRE", "task": "ZsRE", "mode": "single", "ee.edit": 0.1}]
    assert kelocate_value(two, "easyedit", "ZsRE", "mend", "edit_succ") is None  # which one? neither


def test_the_report_never_drops_a_column_it_does_not_list():
    from kelocate.studies.knowedit.report import aggregate, markdown

    rows = [{"method": "rome", "task": "ZsRE", "mode": "single", "status": "ok",
             "scores": [{"edit_tf": 1.0, "ee.edit": 1.0, "ee.portability.Reasoning": 0.5, "brand_new": 0.25}]}]
    (row,) = aggregate(rows)
    assert row["ee.portability.Reasoning"] == 0.5 and row["brand_new"] == 0.25
    narrow = markdown(aggregate(rows), sub_types=False)
    assert "ee.edit" in narrow and "ee.portability.Reasoning" not in narrow  # a terminal shows the main columns


def test_two_studies_stand_beside_each_other_and_the_published_table():
    """A copy of the published table and the same table ordered backwards: each against the paper, and
    against each other, with the numbers that make each cell."""
    same = table_like_published(100.0)
    backwards = [dict(row) for row in same]
    for row in backwards:
        for key in ("ee.edit", "ee.locality", "ee.portability", "ee.fluency", "ee.sentiment", "ee.kl"):
            if key in row:
                row[key] = 10.0 - row[key]  # every ordering reversed
    text = studies_report({"copy": same, "reversed": backwards})
    assert "## copy beside reversed beside the published numbers" in text
    assert "| rho copy vs published | rho reversed vs published | rho copy vs reversed |" in text
    zsre = next(line for line in text.splitlines() if line.startswith("| ZsRE | ee.edit |"))
    assert "96.77 / 903.23 / 96.77" in zsre  # rome: copy / reversed / published
    assert zsre.endswith("| 1.00 (8) | -1.00 (8) | -1.00 (8) |")
    findings_rows = text.split("The paper's findings on each table")[1].splitlines()
    rule_row = next(line for line in findings_rows if line.startswith("| Locate-then-edit beats fine-tuning"))
    assert rule_row.count("| holds") == 2 and rule_row.count("| does not hold") == 1  # published, copy / reversed
    no_shared = studies_report({"a": same, "b": [{"method": "rome", "task": "ZsRE", "mode": "single",
                                                  "edit_tf": 0.9}]})
    assert "no metric profile in common" in no_shared
