"""Files that are not what lepton loads with ``torch.load(weights_only=True)``: one line each, naming
the file, from the loader and from the command line."""

from __future__ import annotations

import collections
import pickle
import random
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from lepton_core.errors import UsageError
from lepton_core.weights import load_weights


class Unknown:  # a class torch's weights-only unpickler does not allow
    pass


def write_cases(folder: Path) -> dict[str, Path]:
    good = folder / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    cases = {"good": good, "folder": folder / "a-folder", "missing": folder / "missing.pt"}
    cases["folder"].mkdir()
    for name, data in [("empty", b""), ("short", b"junk"), ("text", b"not a checkpoint\n"),
                       ("cut", good.read_bytes()[: good.stat().st_size // 2])]:
        cases[name] = folder / f"{name}.pt"
        cases[name].write_bytes(data)
    cases["zip"] = folder / "zip.pt"
    with zipfile.ZipFile(cases["zip"], "w") as z:
        z.writestr("a", "b")
    cases["object"] = folder / "object.pt"
    torch.save({"w": torch.ones(1), "extra": Unknown()}, cases["object"])
    cases["pickle"] = folder / "pickle.pt"
    cases["pickle"].write_bytes(pickle.dumps({"counts": collections.Counter(a=1)}))
    legacy = folder / "legacy.pt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    cases["legacy"], cases["legacy-cut"] = legacy, folder / "legacy-cut.pt"
    cases["legacy-cut"].write_bytes(legacy.read_bytes()[:40])
    return cases


CUT = "not a readable model checkpoint: not a file torch.save wrote, or one cut short"


@pytest.mark.parametrize("case, message", [
    ("missing", "no such model checkpoint file"),
    ("folder", "a folder, not a model checkpoint file"),
    ("empty", "an empty file, not a model checkpoint"),
    ("short", CUT),
    ("text", CUT),
    ("cut", CUT),
    ("zip", CUT),
    ("legacy-cut", CUT),
    ("object", f"the model checkpoint holds a Python object ({__name__}.Unknown) that lepton does not load; "
               "it loads tensors and plain values only (weights_only=True)"),
    ("pickle", CUT),  # pickled by Python, not by torch.save: no torch header
])
def test_each_unreadable_file_is_one_line_that_names_it(tmp_path: Path, case: str, message: str) -> None:
    path = write_cases(tmp_path)[case]
    with pytest.raises(UsageError) as caught:
        load_weights(path, "model checkpoint")
    assert str(caught.value) == f"{path}: {message}"


def test_random_bytes_are_never_taken_for_a_checkpoint(tmp_path: Path) -> None:
    """400 files of seeded random bytes: read as a legacy pickle, 1 in 12 raised IndexError, KeyError
    or UnicodeDecodeError in torch's reader; each is still 'not a file torch.save wrote'."""
    for seed in range(400):
        path = tmp_path / f"bytes-{seed}.pt"
        path.write_bytes(random.Random(seed).randbytes(256))
        with pytest.raises(UsageError) as caught:
            load_weights(path, "model checkpoint")
        assert str(caught.value) == f"{path}: {CUT}"


def test_files_torch_wrote_load_in_either_format(tmp_path: Path) -> None:
    cases = write_cases(tmp_path)
    for name in ("good", "legacy"):
        assert torch.equal(load_weights(cases[name])["w"], torch.ones(3))


def test_the_command_line_refuses_a_bad_model_or_policy_file_with_exit_code_2(tmp_path: Path, demo_data: Path) -> None:
    cases = write_cases(tmp_path)
    runner = CliRunner()
    served = runner.invoke(app, ["serve", str(cases["text"])])
    assert served.exit_code == 2 and served.stderr == f"error: {cases['text']}: {CUT}\n"
    policy = runner.invoke(app, ["plan", str(demo_data), "--method", "ppo", "--policy", str(cases["object"])])
    assert policy.exit_code == 2
    assert policy.stderr == (f"error: {cases['object']}: the planner policy holds a Python object ({__name__}.Unknown) "
                             "that lepton does not load; it loads tensors and plain values only (weights_only=True)\n")
    # a lepton file of the other kind, and a file of plain tensors: each named for what it is not
    torch.save(torch.ones(2), tmp_path / "tensor.pt")
    for path, command, message in [
        (tmp_path / "tensor.pt", ["plan", str(demo_data), "--method", "ppo", "--policy"], "not a migration planner checkpoint"),
        (cases["good"], ["serve"], "not a lepton model checkpoint (no format 'lepton-checkpoint/1' in it)"),
    ]:
        out = runner.invoke(app, [*command, str(path)])
        assert out.exit_code == 2 and out.stderr.startswith(f"error: {path}: {message}") and out.stderr.count("\n") == 1
