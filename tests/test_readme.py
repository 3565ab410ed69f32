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
