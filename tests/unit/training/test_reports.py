"""docs/*.md are generated from the committed JSON, with plots where configured."""

import json
from pathlib import Path

from training.reports import markdown_table, write_docs


def test_tables_and_plots_come_from_the_json(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    payload = {"title": "T", "command": "lawm eval idm", "rows": [{"video": "a", "idm_l1": 0.25, "shuffled_l1": 0.3, "zero_l1": 0.5}]}
    (results / "idm.json").write_text(json.dumps(payload))
    (written,) = write_docs(tmp_path)
    text = written.read_text()
    assert "## T" in text and "- **command**: lawm eval idm" in text
    assert "| a | 0.25 | 0.3 | 0.5 |" in text
    assert "![idm](img/idm.png)" in text and (tmp_path / "img" / "idm.png").stat().st_size > 1000


def test_a_verdict_given_as_findings_is_a_nested_list(tmp_path: Path) -> None:
    from training.reports import render_section

    text = render_section("x", {"title": "T", "verdict": ["first finding", "second finding"], "rows": []})
    assert "- **verdict**:\n  - first finding\n  - second finding\n" in text


def test_markdown_table_formats_floats() -> None:
    assert markdown_table([{"x": 1.23456789, "y": "s"}]).splitlines()[-1] == "| 1.235 | s |"
    assert markdown_table([{"regularizer": "discrete |C|=16"}]).splitlines()[-1] == "| discrete \\|C\\|=16 |"


def test_rows_may_differ_in_their_columns_and_undefined_values_show_a_dash() -> None:
    lines = markdown_table([{"a": 1.0}, {"a": None, "b": "x"}]).splitlines()
    assert lines[0] == "| a | b |" and lines[2:] == ["| 1 |  |", "| — | x |"]


def test_images_an_evaluation_wrote_are_linked_from_the_page(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    inside, outside = tmp_path / "img" / "strip.png", Path("/elsewhere/other.png")
    (results / "renders.json").write_text(json.dumps({"title": "R", "rows": [], "images": [str(inside), str(outside)]}))
    text = write_docs(tmp_path)[0].read_text()
    assert "![strip](img/strip.png)" in text and "![other](/elsewhere/other.png)" in text
