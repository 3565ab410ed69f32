"""errors: every error is exported, a ChestError, pickles, and names its subject."""
from __future__ import annotations

import errno
import pickle

import pytest

import chest
from chest.folder import check_folder
from chest.errors import (ChestError, ChestLockedError, DiskBudgetError,
                          FolderChangedError, FolderError, IndexFileError, ReadOnlyError, UnwritableValuesError,
                          ValueFileError)

ERRORS = [
    (ValueFileError(("a", 1), "/c/_a/1", "truncated"), ["('a', 1)", "/c/_a/1"]),
    (IndexFileError("/c/.keys", "bad checksum"), ["/c/.keys", "bad checksum"]),
    (UnwritableValuesError("/c", {"k": ValueError("no")}), ["/c", "'k'"]),
    (ChestLockedError("/c", "process 12"), ["/c", "process 12"]),
    (ReadOnlyError("/c", "set a key"), ["/c", "set a key"]),
    (DiskBudgetError("/c", "k", 200, 100), ["/c", "'k'", "max_disk=100"]),
    (FolderChangedError("/c", "set a key"), ["/c", "set a key", "reopen"]),
]


@pytest.mark.parametrize("error,named", ERRORS, ids=lambda e: type(e).__name__)
def test_errors(error, named):
    cls = type(error)
    assert getattr(chest, cls.__name__) is cls
    assert isinstance(error, ChestError)
    for text in named:
        assert text in str(error)
    again = pickle.loads(pickle.dumps(error))  # across dask's worker processes
    assert type(again) is cls and str(again) == str(error)


def test_os_errors_are_os_errors():
    # ``except OSError`` around file work catches a damaged file or a full cap.
    assert isinstance(ValueFileError("k", "f", "r"), OSError)
    assert DiskBudgetError("/c", "k", 2, 1).errno == errno.ENOSPC


def test_a_damaged_value_is_not_a_key_error():
    assert not isinstance(ValueFileError("k", "f", "r"), KeyError)


def test_folder_error_names_the_path(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(FolderError) as info:
        check_folder(missing)
    assert missing in str(info.value)
    assert isinstance(info.value, ChestError) and chest.FolderError is FolderError
