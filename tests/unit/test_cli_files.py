"""Where the command line writes: a destination it cannot write is refused in one line before the
work starts (exit code 2), and a file the machine refuses mid-way is its name and the reason
(exit code 1), never an 'unexpected' error. And the command list `lepton --help` prints."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app


@pytest.fixture
def in_the_way(tmp_path: Path) -> Path:
    """A file where a folder would have to be."""
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def test_a_chart_that_cannot_be_written_is_refused_before_planning(demo_data: Path, in_the_way: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["plan", str(demo_data), "--chart", str(in_the_way / "gantt.png")])
    assert out.exit_code == 2 and out.stdout == ""  # nothing planned
    assert out.stderr == f"error: --chart {in_the_way / 'gantt.png'}: its folder {in_the_way}: a file, not a folder\n"
    out = runner.invoke(app, ["plan", str(demo_data), "--chart", str(tmp_path)])
    assert out.exit_code == 2 and out.stderr == f"error: --chart {tmp_path}: a folder, not a file\n"
    made = tmp_path / "new" / "deeper" / "gantt.png"  # missing folders are made, as the chart's writer makes them
    out = runner.invoke(app, ["plan", str(demo_data), "--chart", str(made)])
    assert out.exit_code == 0 and made.is_file() and not list(made.parent.glob(".lepton-probe-*"))


def test_other_destinations_are_checked_before_the_work(demo_data: Path, in_the_way: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["compare-clouds", str(demo_data), "--out", str(in_the_way / "cmp")])
    assert out.exit_code == 2 and out.stderr == f"error: --out {in_the_way / 'cmp'}: {in_the_way} is a file, not a folder\n"
    out = runner.invoke(app, ["sample", str(in_the_way / "sub" / "demo"), "--no-model"])
    assert out.exit_code == 2
    assert out.stderr == f"error: DEST's folder {in_the_way / 'sub'}: {in_the_way} is a file, not a folder\n"
    monkeypatch.setenv("LEPTON_HOME", str(in_the_way / "home"))
    out = runner.invoke(app, ["plan", str(demo_data), "--method", "ppo"])  # looks for the trained policy in the state folder
    assert out.exit_code == 2 and out.stderr == f"error: LEPTON_HOME {in_the_way / 'home'}: {in_the_way} is a file, not a folder\n"


def test_a_file_the_machine_refuses_mid_way_is_named_with_the_reason(demo_data: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import lepton_core.sim.chart

    def full(plan, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(lepton_core.sim.chart, "gantt_png", full)
    out = CliRunner().invoke(app, ["plan", str(demo_data), "--chart", str(tmp_path / "gantt.png")])
    assert out.exit_code == 1 and out.stderr == f"error: {tmp_path / 'gantt.png'}: No space left on device\n"


def test_the_command_list_gives_each_commands_summary_as_one_sentence() -> None:
    """`lepton --help` lists each command with its docstring's first paragraph; a summary wrapped
    over two lines in the source reads as one sentence there, not broken where the source broke it."""
    import inspect

    import typer.main

    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400"}, terminal_width=400)
    assert out.exit_code == 0
    listed = {line.strip("│ ").split(" ", 1)[0]: " ".join(line.strip("│ ").split()[1:]) for line in out.stdout.splitlines()}
    group = typer.main.get_group(app)
    for name, command in group.commands.items():
        summary = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert listed.get(name) == summary, (name, listed.get(name))


def test_an_unknown_arrival_schedule_is_refused_before_any_work() -> None:
    out = CliRunner().invoke(app, ["optimize", "--arrivals", "burst"])
    assert out.exit_code == 2 and out.stderr == "error: --arrivals burst: one of poisson, constant\n"  # a usage error
