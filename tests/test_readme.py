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
