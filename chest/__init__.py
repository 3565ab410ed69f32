"""chest: a dictionary that spills to disk.

>>> from chest import Chest
>>> c = Chest()
>>> c["x"] = [1, 2, 3]
>>> c["x"]
[1, 2, 3]
>>> c.close()
"""
from .core import Chest, key_to_filename, nbytes
from .errors import (ChestError, ChestLockedError, ChestWarning, DiskBudgetError,
                     FolderError, IndexFileError, ReadOnlyError,
                     UnwritableValuesError, ValueFileError)

__version__ = "1.0.0.dev0"

__all__ = [
    "Chest", "nbytes", "key_to_filename", "ChestError", "ChestLockedError",
    "ChestWarning", "DiskBudgetError", "FolderError", "IndexFileError",
    "ReadOnlyError", "UnwritableValuesError", "ValueFileError", "__version__",
]
