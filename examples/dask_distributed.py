"""A chest as each dask.distributed worker's storage (``data=``).

Run: ``python examples/dask_distributed.py`` (needs ``pip install chest[dask]``)
"""
from __future__ import annotations

import logging

import dask.array as da
from distributed import Client, LocalCluster, wait

from chest import Chest


def main() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      data=(Chest, {"available_memory": "32MB"}),
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        x = client.persist(
            da.random.RandomState(0).random_sample((8000, 4000), chunks=(500, 4000)))
        wait(x)  # 256 MB held by two workers with 32 MB of memory each
        print("sum:", float(x.sum().compute()))
        reports = client.run(lambda dask_worker: repr(dask_worker.data))
        for address, line in reports.items():
            print(address, line)
    # The client closes first, then the cluster (workers, then the scheduler).
    # distributed may still log "Failed to communicate with scheduler during
    # heartbeat." with a traceback as a worker stops (dask/distributed#7105):
    # a race inside distributed at shutdown, harmless to the results.


if __name__ == "__main__":
    main()
