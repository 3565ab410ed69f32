"""chest: a dictionary that spills to disk.

>>> from chest import Chest
>>> c = Chest()
>>> c["x"] = [1, 2, 3]
>>> c["x"]
[1, 2, 3]
>>> c.close()
"""
from .core import Chest, key_to_filename, nbytes
from .errors import (BoundToMemoryError, ChestError, ChestLockedError, ChestWarning,
                     DiskBudgetError, FolderChangedError, FolderError, IndexFileError,
                     IndexWriteError, ReadOnlyError, UnwritableValuesError, ValueFileError)
from .containers import List, Set
from .serialize import keep_in_memory
from .state import State

__version__ = "1.0.0.dev0"

__all__ = [
    "Chest", "List", "Set", "State", "nbytes", "key_to_filename", "keep_in_memory",
    "BoundToMemoryError",
    "ChestError", "ChestLockedError",
    "ChestWarning", "DiskBudgetError", "FolderChangedError", "FolderError",
    "IndexFileError", "IndexWriteError",
    "ReadOnlyError", "UnwritableValuesError", "ValueFileError", "__version__",
]
