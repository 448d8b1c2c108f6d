"""The CLI's last line of defence: an unexpected exception is one line naming the command and the
error, its traceback goes to a log file the line names, and the exit code is 3."""
import pytest

import fastmtl.train
from fastmtl import cli
from fastmtl.cli import COMMANDS, EXIT_UNEXPECTED, main


def _raise(error):
    def run(*args, **kwargs):
        raise error
    return run


def _recurse(n=0):
    return _recurse(n + 1)


def _deep(args):
    _recurse()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTMTL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("run, kind", [
    (_raise(TypeError("unsupported operand type(s) for +: 'int' and 'str'")), "TypeError"),
    (_raise(RuntimeError("CUDA error: an illegal memory access\nsecond line")), "RuntimeError"),
    (_deep, "RecursionError"),
    (_raise(MemoryError()), "MemoryError"),
])
def test_unexpected_errors_are_one_line_with_the_traceback_in_the_cache(run, kind, cache, monkeypatch, capsys):
    help_text, add_arguments, _ = COMMANDS["eval"]
    monkeypatch.setitem(COMMANDS, "eval", (help_text, add_arguments, run))
    assert main(["eval", "--checkpoint", "x.pt"]) == EXIT_UNEXPECTED == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"fastmtl eval: unexpected error: {kind}")
    logs = list((cache / "logs").glob("crash-eval-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "fastmtl eval --checkpoint x.pt" in text and "Traceback" in text and kind in text


def test_a_train_crash_logs_into_its_run_directory(tmp_path, cache, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    monkeypatch.setattr(fastmtl.train, "train", _raise(TypeError("boom")))
    assert main(["train", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    logs = list(out.glob("crash-train-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err and "TypeError: boom" in err
    assert not (cache / "logs").exists()


def test_a_train_crash_of_another_rank_logs_into_the_cache(tmp_path, cache, monkeypatch, capsys):
    """Only global rank 0 writes the run directory (multi-node: its ``--out`` may be shared)."""
    out = tmp_path / "run"
    out.mkdir()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(fastmtl.train, "train", _raise(TypeError("boom")))
    assert main(["train", "--out", str(out)]) == 3
    logs = list((cache / "logs").glob("crash-train-*.log"))
    assert len(logs) == 1 and str(logs[0]) in capsys.readouterr().err
    assert not list(out.iterdir())


def test_an_unwritable_log_folder_still_gives_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FASTMTL_CACHE", str(blocker))
    help_text, add_arguments, _ = COMMANDS["eval"]
    monkeypatch.setitem(COMMANDS, "eval", (help_text, add_arguments, _raise(TypeError("boom"))))
    assert main(["eval", "--checkpoint", "x.pt"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the traceback could not be written" in err


def test_user_errors_keep_exit_code_2(capsys):
    assert cli.EXIT_USER_ERROR == 2
    assert main(["eval", "--checkpoint", "/nonexistent/x.pt"]) == 2
