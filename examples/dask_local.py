"""A chest as the dask local scheduler's cache: intermediates spill to disk.

Run: ``python examples/dask_local.py`` (needs ``pip install chest[dask]``)
"""
from __future__ import annotations

import dask
import dask.array as da

from chest import Chest


def main() -> None:
    x = da.random.RandomState(0).random_sample((4000, 4000), chunks=(500, 500))
    y = (x + x.T).mean(axis=0)  # 128 MB of chunks, each used twice, 8 MB budget
    with Chest(available_memory="8MB") as cache:
        (result,) = dask.compute(y, cache=cache, scheduler="threads")
        print(f"result shape {result.shape}; {cache.stats}")
        # Only the final result's key stays in the cache.
        print(f"keys left in the cache: {len(cache)}")


if __name__ == "__main__":
    main()
