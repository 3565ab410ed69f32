"""Every script in examples/ runs and exits cleanly, and leaves nothing in the
repository (each runs in a folder of its own)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir,
                                        "examples"))
REPO = os.path.dirname(EXAMPLES)
SCRIPTS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
NEEDS = {"dask_local.py": "dask", "dask_distributed.py": "distributed"}


def run(args, cwd, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def chests_in(folder):
    return {name for name in os.listdir(folder) if name.endswith(".chest")}


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    if script in NEEDS:
        pytest.importorskip(NEEDS[script])
    before = chests_in(REPO), chests_in(EXAMPLES)
    result = run([os.path.join(EXAMPLES, script)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (chests_in(REPO), chests_in(EXAMPLES)) == before


def test_spill_arrays_leaves_its_chest_for_the_command_line(tmp_path):
    pytest.importorskip("numpy")
    script = os.path.join(EXAMPLES, "spill_arrays.py")
    for _ in range(2):  # the second run replaces the chest the first one left
        result = run([script], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    path = tmp_path / "demo.chest"
    assert f"The chest stays in {path}" in result.stdout
    assert "keys:          24" in result.stdout  # the demo's own `chest info`
    for command in (["info"], ["ls", "--long"], ["verify", "--deep"]):
        assert f"python -m chest {command[0]} demo.chest" in result.stdout
        checked = run(["-m", "chest", *command, "demo.chest"], cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("no problems: 24 keys")


def test_spill_arrays_does_not_replace_a_folder_of_another_kind(tmp_path):
    pytest.importorskip("numpy")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = run([os.path.join(EXAMPLES, "spill_arrays.py"), "mine"], cwd=tmp_path)
    assert result.returncode == 1
    assert "not a chest folder" in result.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
