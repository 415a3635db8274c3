"""The CLI kit: its console never wraps a line, whatever the width of the terminal or of the line."""

from __future__ import annotations

import io

import pytest

from training.cli_kit import console, errors_as_exit


@pytest.mark.parametrize("width", [20, 80, 200])
def test_a_long_line_is_written_whole_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    out = io.StringIO()  # not a terminal, as a log file or a pipe
    monkeypatch.setattr(console, "file", out)
    monkeypatch.setattr(console, "width", width)
    line = "serving " + "/a/deep/checkout" * 30 + "/models/repository/tiny v1 on http://127.0.0.1:8000 (onnxruntime)"
    console.print(line, markup=False, highlight=False)
    assert out.getvalue() == line + "\n"


def test_known_errors_are_one_verbatim_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    out = io.StringIO()
    monkeypatch.setattr(console, "file", out)
    monkeypatch.setattr(console, "width", 30)
    monkeypatch.delenv("LAWM_DEBUG", raising=False)

    @errors_as_exit(lambda: (ValueError,))
    def command() -> None:
        raise ValueError("inputs must have shape [batch, steps, 16, 32] in a file under " + "/long" * 20)

    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == 2
    text = out.getvalue()
    assert text.count("\n") == 1 and "[batch, steps, 16, 32]" in text and text.startswith("error: ")
