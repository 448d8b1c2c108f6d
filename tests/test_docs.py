"""The manual stays true: its commands parse, its links resolve, the README stays short, no machine paths.

Every ``fastmtl ...`` line of a fenced ``bash`` block in README.md and docs/*.md is parsed by the
real CLI parser (``FASTMTL_PARSE_ONLY=1``: parse, run nothing); every relative Markdown link
points at a file of the repository; README.md is at most 260 lines; no tracked text file holds
a path of a particular machine.
"""
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from fastmtl.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 260
FENCE = re.compile(r"^```(\S*)\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
# assembled from pieces so that this file does not match itself
MACHINE_PATH = re.compile("|".join(["/" + "work/", "/" + "home/", "/" + "Users/", r"(?<![\w.])\." + "library"]))


def bash_commands(page: Path):
    """``(line number, argv)`` of every ``fastmtl`` command in the page's ``bash`` blocks.

    A trailing ``\\`` joins the next line; a ``#`` comment (shell rules: outside quotes) is dropped.
    """
    lang = None
    pending, start = "", 0
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line.strip())
        if fence:
            lang = None if lang is not None else fence.group(1)
            continue
        if lang != "bash":
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = pending + line, ""
        argv = shlex.split(text, comments=True)
        if argv and argv[0] == "fastmtl":
            yield start, argv[1:]


COMMANDS = [pytest.param(argv, id=f"{page.relative_to(ROOT)}:{number}")
            for page in PAGES for number, argv in bash_commands(page)]


def test_the_manual_documents_commands():
    assert len(COMMANDS) >= 40, [c.id for c in COMMANDS]


@pytest.mark.parametrize("argv", COMMANDS)
def test_documented_command_parses(argv, monkeypatch, capsys):
    monkeypatch.setenv("FASTMTL_PARSE_ONLY", "1")
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: 2 on a bad flag; --version and --help exit 0
        rc = e.code
    assert rc in (0, None), f"fastmtl {' '.join(argv)}: {capsys.readouterr().err.strip()}"


def test_a_wrong_flag_fails_the_parse(monkeypatch, capsys):
    monkeypatch.setenv("FASTMTL_PARSE_ONLY", "1")
    with pytest.raises(SystemExit) as e:
        main(["train", "--no-such-flag"])
    assert e.value.code == 2


def test_continuations_and_comments_are_joined_and_dropped(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nfastmtl train --lr 1e-3 \\\n    --epochs 2   # two epochs\npip install x\n```\n"
                    "```python\nfastmtl doctor\n```\n", encoding="utf-8")
    assert list(bash_commands(page)) == [(2, ["train", "--lr", "1e-3", "--epochs", "2"])]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(page):
    broken = []
    for target in LINK.findall(CODE_SPAN.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or a link inside the page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move text to docs/"


def tracked_text_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (a PNG)
        yield name, data.decode("utf-8", errors="replace")


def test_no_machine_paths_in_tracked_files():
    hits = [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
            for name, text in tracked_text_files() for m in MACHINE_PATH.finditer(text)]
    assert not hits, "paths of a particular machine: " + "; ".join(hits[:20])


def test_machine_path_pattern():
    assert MACHINE_PATH.search("see " + "/" + "work/main/x") and MACHINE_PATH.search("/x/." + "library/y")
    assert not MACHINE_PATH.search("torch.library.custom_op") and not MACHINE_PATH.search("/data/nyuv2")
