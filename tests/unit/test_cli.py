"""The command line's error contract: one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest

from pipeline.cli import main


@pytest.mark.parametrize(("argv", "needle"), [
    (["replay"], "required: --source"),
    (["replay", "--source"], "expected one argument"),
    (["nope"], "invalid choice"),
    (["produce", "--mode", "paper"], "invalid choice"),
])
def test_usage_errors_are_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_bad_settings_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PIPELINE_WATERMARK_SECONDS", "soon")
    assert main(["stack", "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PIPELINE_WATERMARK_SECONDS" in err


def test_unexpected_failures_are_one_line_unless_verbose(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import pipeline.cli as cli

    def boom(*_args: object) -> int:
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(cli, "_stack", boom)
    assert main(["stack", "status"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: something nobody planned for" in err
    with pytest.raises(RuntimeError):
        main(["-v", "stack", "status"])
