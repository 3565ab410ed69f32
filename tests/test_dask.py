"""dask: the local schedulers' ``cache=`` and dask.distributed workers' ``data=``."""
from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest

from chest import Chest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

BUDGET = 8 * 2**20


@pytest.fixture(autouse=True)
def no_leaked_file_descriptors():
    """dask keeps process pools and clusters' sockets around: not ours to check."""
    yield


def workload():
    """About 64 MB of chunks, with reuse: several times the budget."""
    x = da.random.RandomState(0).random_sample((2000, 4000), chunks=(500, 500))
    return (x + x[::-1]).sum(axis=0) + x.mean(axis=1).sum()


@pytest.mark.parametrize("scheduler", ["threads", "sync", "processes"])
def test_local_scheduler_cache(tmp_path, scheduler):
    expected = workload().compute(scheduler="sync")
    with Chest(path=str(tmp_path / "cache"), available_memory=BUDGET) as cache:
        (result,) = dask.compute(workload(), scheduler=scheduler, cache=cache,
                                 num_workers=2)
        np.testing.assert_allclose(result, expected)
        assert cache.memory_usage <= BUDGET
        if scheduler != "processes":  # the processes scheduler fuses tasks
            assert cache.stats.spills > 0 and cache.stats.reloads > 0
        # Only the requested result stays; intermediates were deleted.
        assert len(cache) == 1
        (key,) = cache
        np.testing.assert_allclose(cache[key], expected)


def test_empty_chest_is_used_as_a_cache(tmp_path):
    # dask tests ``cache is None``, so an empty (falsy) chest is still used.
    with Chest(path=str(tmp_path / "c")) as cache:
        dask.compute(da.ones(10, chunks=5).sum(), cache=cache, scheduler="sync")
        assert len(cache) == 1


# -- dask.dataframe's disk shuffle: a partd handle lives in the cache -------------
def _frames():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 60_000
    left = pd.DataFrame({"k": rng.integers(0, 20_000, n), "x": rng.random(n)})
    right = pd.DataFrame({"k": np.arange(20_000), "y": rng.random(20_000)})
    return left, right


DATAFRAME_OPERATIONS = {
    "merge": (lambda l, r: l.merge(r, on="k", shuffle_method="disk"),
              lambda l, r: l.merge(r, on="k")),
    "set_index": (lambda l, r: l.set_index("k", shuffle_method="disk"),
                  lambda l, r: l.set_index("k")),
    "shuffle": (lambda l, r: l.shuffle("k", shuffle_method="disk"), lambda l, r: l),
    "groupby split_out": (
        lambda l, r: l.groupby("k").x.sum(split_out=4, shuffle_method="disk"),
        lambda l, r: l.groupby("k").x.sum()),
}


@pytest.mark.parametrize("budget", [0, "1MB"])
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("operation", sorted(DATAFRAME_OPERATIONS))
def test_dataframe_disk_shuffle_through_a_chest(operation, scheduler, budget):
    # The disk shuffle keeps a partd handle in the cache; partd deletes its
    # data when that object is garbage-collected, so spilling it (pickle,
    # drop the original) lost rows: 0 of them with a budget of 0. Values
    # whose class defines __del__ now stay in memory.
    dd = pytest.importorskip("dask.dataframe")
    left, right = _frames()
    run, expected = DATAFRAME_OPERATIONS[operation]
    lazy = run(dd.from_pandas(left, npartitions=6), dd.from_pandas(right, npartitions=3))
    with Chest(available_memory=budget) as cache:
        (result,) = dask.compute(lazy, cache=cache, scheduler=scheduler)
    want = expected(left, right)
    assert len(result) == len(want)
    if operation == "merge":
        key = ["k", "x", "y"]
        assert result.sort_values(key).reset_index(drop=True).equals(
            want.sort_values(key).reset_index(drop=True))
    elif operation == "groupby split_out":
        assert np.allclose(result.sort_index(), want.sort_index())
    else:
        assert sorted(result["x"]) == sorted(want["x"])


# -- dask.distributed ------------------------------------------------------------
def test_evict_returns_bytes_freed_and_never_raises(tmp_path):
    class Unpicklable:
        nbytes = 10_000

        def __reduce__(self):
            raise TypeError("no")

    c = Chest(path=str(tmp_path / "c"), available_memory=10**6)
    assert not c.fast
    assert c.evict() == -1
    c["bad"] = Unpicklable()
    c["x"] = np.zeros(100)
    assert c.fast
    assert c.evict() == 800          # "bad" is larger but cannot be written
    assert "bad" in c.fast and "x" in c.slow
    assert c.evict() == -1
    assert list(c.slow) == ["x"] and len(c.slow) == 1
    assert c.spilled_total.disk == os.path.getsize(c.key_to_filename("x"))
    assert c.spilled_total.memory == 800
    assert c.cumulative_metrics[("disk-write", "count")] == 1
    del c["bad"]
    c.close()


def test_evict_logs_instead_of_raising(tmp_path, caplog):
    def refuse(key):
        raise RuntimeError("on_overflow failed")

    c = Chest(path=str(tmp_path / "c"), on_overflow=refuse)
    c["x"] = 1
    with caplog.at_level(logging.WARNING, logger="chest.core"):
        assert c.evict() == -1
    assert "on_overflow failed" in caplog.text
    assert c.fast == {"x": 1}
    c.drop()


def test_worker_data_callable_gets_the_workers_folder(tmp_path):
    c = Chest(str(tmp_path))  # what Worker(data=Chest) calls
    assert os.path.dirname(c.path) == str(tmp_path) and not c
    c.close()
    assert os.listdir(tmp_path) == []
    c = Chest(worker_local_directory=str(tmp_path), available_memory=10)
    assert os.path.dirname(c.path) == str(tmp_path)
    c.close()


def _array_sum(n_chunks):
    x = da.random.RandomState(1).random_sample((n_chunks * 250, 4000),
                                               chunks=(250, 4000))
    return (x * 2).sum(axis=0)


@pytest.mark.parametrize("processes", [False, True])
def test_local_cluster(processes):
    distributed = pytest.importorskip("distributed")
    expected = _array_sum(16).compute(scheduler="sync")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=processes,
        data=(Chest, {"available_memory": BUDGET}), dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster, distributed.Client(cluster) as client:
        # 128 MB of chunks persisted on two workers with 8 MiB budgets each.
        x = da.random.RandomState(1).random_sample((16 * 250, 4000),
                                                   chunks=(250, 4000))
        x = client.persist(x)
        distributed.wait(x)
        result = (x * 2).sum(axis=0).compute()
        np.testing.assert_allclose(result, expected)

        def inspect(dask_worker):
            data = dask_worker.data
            return (type(data).__name__, data.memory_usage, data.available_memory,
                    data.stats.spills, len(data), os.path.dirname(data.path),
                    dask_worker.local_directory, pickle.dumps(data.spilled_total))

        for name, used, budget, spills, n, folder, local, spilled in \
                client.run(inspect).values():
            assert name == "Chest" and used <= budget == BUDGET
            assert spills > 0 and n > 0
            assert folder == local
            assert pickle.loads(spilled).disk > 0


@pytest.mark.parametrize("processes", [False, True])
def test_a_workers_chest_takes_the_workers_budget(processes):
    # Without available_memory each worker's chest took 25% of the machine,
    # whatever the worker's memory_limit: 8 workers, twice the machine.
    distributed = pytest.importorskip("distributed")
    target = dask.config.get("distributed.worker.memory.target")
    # Workers in threads measure this whole process, which may be over 80%
    # of their limit after the tests before: they would pause for good.
    # This test is about the budget, not about pausing or spilling by
    # process memory.
    with dask.config.set({"distributed.worker.memory.pause": False,
                          "distributed.worker.memory.spill": False,
                          "distributed.worker.memory.terminate": False}), \
            distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=processes, memory_limit="300MB",
        data=(Chest, {}), dashboard_address=":0", silence_logs=logging.ERROR,
    ) as cluster, distributed.Client(cluster) as client:
        x = client.persist(da.ones(4000, chunks=1000))
        distributed.wait(x)
        budgets = client.run(lambda dask_worker: dask_worker.data.available_memory)
        assert set(budgets.values()) == {int(300e6 * target)}
        assert int(x.sum().compute()) == 4000
    explicit = Chest(worker_local_directory=None, available_memory="1MB")
    assert explicit.available_memory == 10**6
    explicit.close()
