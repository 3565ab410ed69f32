"""Save a dict of big values, then reopen it later by its path.

Run: ``python examples/reopen_by_path.py``
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from chest import Chest


def main(folder: str) -> None:
    path = os.path.join(folder, "results.chest")
    with Chest(path=path, available_memory="50MB") as c:
        c["weights"] = np.random.default_rng(0).random((1000, 1000))
        c["run", 1] = {"loss": 0.25, "steps": 1000}
        c["run", 2] = {"loss": 0.125, "steps": 2000}
    # ... later, in another process:
    with Chest(path=path) as c:
        print(sorted(c, key=repr))
        print(c["run", 2], c["weights"].shape)
        assert c["run", 1]["loss"] == 0.25
    reader = Chest(path=path, readonly=True)  # beside a writer, read-only
    assert len(reader) == 3
    reader.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(tmp)
