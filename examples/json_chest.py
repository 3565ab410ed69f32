"""A chest whose value files are json, readable by any program.

Run: ``python examples/json_chest.py``
"""
from __future__ import annotations

import json
import os
import tempfile

from chest import Chest


def main(folder: str) -> None:
    path = os.path.join(folder, "records.chest")
    c = Chest(path=path, dump=json.dump, load=json.load, mode="t",
              available_memory=0)  # everything straight to files
    c["alice"] = {"age": 31, "langs": ["python", "c"]}
    c[("team", "core")] = ["alice", "bob"]  # tuple keys survive reopening
    c.close()
    with open(os.path.join(path, "alice")) as f:
        print("alice's file:", f.read())
    again = Chest(path=path, dump=json.dump, load=json.load, mode="t")
    print(dict(again))
    assert again[("team", "core")] == ["alice", "bob"]
    again.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(tmp)
