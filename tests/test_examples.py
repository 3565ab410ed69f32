"""Every script in examples/ runs and exits cleanly."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
SCRIPTS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
NEEDS = {"dask_local.py": "dask", "dask_distributed.py": "distributed"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script):
    if script in NEEDS:
        pytest.importorskip(NEEDS[script])
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
