"""README.rst is valid reStructuredText (its examples run as doctests)."""
from __future__ import annotations

import os

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.rst")


def test_readme_renders_without_errors():
    core = pytest.importorskip("docutils.core")
    with open(README) as f:
        text = f.read()
    core.publish_doctree(text, settings_overrides={"halt_level": 2,
                                                   "report_level": 2})


def test_every_name_the_readme_gives_exists():
    import importlib
    import re

    with open(README) as f:
        text = f.read()
    names = set(re.findall(r"``(chest(?:\.[A-Za-z_]\w*)+)", text))
    assert "chest.ValueFileError" in names
    for dotted in sorted(names):
        parts = dotted.split(".")
        found = importlib.import_module(parts[0])
        for i, part in enumerate(parts[1:], 2):
            if hasattr(found, part):
                found = getattr(found, part)
            else:  # a submodule not imported yet, or a name that does not exist
                found = importlib.import_module(".".join(parts[:i]))


def try_it_commands():
    """The shell commands of the README's "Try it" section, in order."""
    import re

    with open(README) as f:
        text = f.read()
    section = text.split("\nTry it\n------\n", 1)[1].split("\nInstall\n-------\n", 1)[0]
    return [line.strip() for line in re.findall(r"::\n\n((?:    .*\n)+)", section)]


def test_try_it_installs_in_a_virtual_environment_as_ci_does():
    """Each command makes and activates ``.venv`` before ``pip install``
    (Debian's and Ubuntu's Python refuse installs outside one), the demo is
    there, and the tests command installs and runs what ``.ci/run`` does."""
    import shlex

    demo, tests = try_it_commands()
    root = os.path.dirname(README)
    steps = {}
    for command in (demo, tests):
        parts = [shlex.split(part) for part in command.split(" && ")]
        assert parts[:2] == [["python3", "-m", "venv", ".venv"],
                             [".", ".venv/bin/activate"]], command
        assert parts[2][:5] == ["python", "-m", "pip", "install", "-e"], command
        steps[command] = parts[2][5:], parts[3:]
    assert steps[demo] == ([".[arrays]"], [["python", "examples/spill_arrays.py"]])
    assert os.path.exists(os.path.join(root, "examples", "spill_arrays.py"))
    with open(os.path.join(root, ".ci", "run")) as f:
        ci = [shlex.split(line) for line in f if line.startswith("python ")]
    assert ["python", "-m", "pip", "install", "-q", "-e", ".[test,dask]"] in ci
    assert ["python", "-m", "pytest", "-q"] in ci
    assert steps[tests] == ([".[test,dask]"], [["python", "-m", "pytest"]])
