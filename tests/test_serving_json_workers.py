"""JSON bodies parsed in worker processes through shared-memory slots give what the parser gives.

Real worker processes (spawned, so each test that starts a pool takes about a second), real
memory files; no TensorFlow in the workers.
"""

import asyncio
import json
import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from imgclf.serving import json_dense, json_workers

FLOAT = {"serving_default": {"x": json_dense.DT_FLOAT}}


def body_of(array, key="instances"):
    return json.dumps({key: array.tolist()}).encode()


def image(size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (1, size, size, 3)).astype(float)


def memfds():
    """The memory files this process has open, by fd."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:imgclf-json"):
            found[int(fd)] = target
    return found


def run(coroutine):
    return asyncio.run(coroutine)


def assert_same(got, expected):
    assert got[0] == expected[0] and got[2] == expected[2]
    assert got[1].keys() == expected[1].keys()
    for key in expected[1]:
        assert got[1][key].dtype == expected[1][key].dtype
        np.testing.assert_array_equal(got[1][key], expected[1][key])


@pytest.fixture
def pool():
    before = memfds()
    pool = json_workers.JsonParsePool(processes=1)
    yield pool
    pool.close()
    assert memfds() == before, "close() left memory files open"


def test_bodies_of_growing_size_and_other_dtypes_come_back_as_the_parser_gives_them(pool):
    small, large = body_of(image(32)), body_of(image(300, seed=1))  # 20 KB, then 1.8 MB: the slot grows
    assert len(large) > json_workers._SMALLEST_SLOT
    # int64 from one-digit numbers takes 4 bytes of array per byte of body: more than a slot holds,
    # so it comes back through the pipe.
    digits = json.dumps({"inputs": np.random.default_rng(2).integers(0, 10, (400, 400)).tolist()}).encode()
    int64 = {"serving_default": {"x": json_dense.DT_INT64}}

    async def main():
        answers = []
        for body, signatures in ((small, FLOAT), (large, FLOAT), (digits, int64), (small, FLOAT)):
            answers.append((await pool.parse(body, signatures), body, signatures))
        return answers

    for got, body, signatures in run(main()):
        assert_same(got, json_dense.parse_dense_request(body, signatures))
    # Each slot's fd, and the duplicate its mmap keeps; the grown slot's old file is closed.
    assert len(memfds()) == 2 * json_workers.SLOTS_PER_PROCESS


def test_concurrent_requests_share_the_slots_and_each_gets_its_own_arrays(pool):
    bodies = [body_of(image(64, seed=seed)) for seed in range(12)]  # more requests than slots

    async def main():
        return await asyncio.gather(*(pool.parse(body, FLOAT) for body in bodies))

    for got, body in zip(run(main()), bodies):
        assert_same(got, json_dense.parse_dense_request(body, FLOAT))


def test_a_body_that_is_not_dense_gives_none(pool):
    ragged = json.dumps({"instances": [[1.0, 2.0], [3.0]]}).encode()
    assert run(pool.parse(ragged, FLOAT)) is None
    assert run(pool.parse(b'{"instances": [NaN]}', FLOAT)) is None


async def handed_to_a_worker(pool):
    """Wait until a request's body is in its slot and its task on its way to a worker (too late
    to cancel)."""
    deadline = time.monotonic() + 30
    while not any(item.future.running() for item in list(pool._executor._pending_work_items.values())):
        assert time.monotonic() < deadline, "no task reached a worker"
        await asyncio.sleep(0.0005)


def test_a_cancelled_request_keeps_its_slot_until_the_worker_is_done_with_it(pool):
    big = body_of(image(800, seed=3))  # 12 MB: tens of milliseconds of parsing
    slots = json_workers.SLOTS_PER_PROCESS

    async def main():
        await pool.parse(body_of(image(8)), FLOAT)  # the worker is up
        task = asyncio.ensure_future(pool.parse(big, FLOAT))
        await handed_to_a_worker(pool)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        # The worker may still write into the slot: it is not free yet...
        withheld = pool._free.qsize()
        deadline = time.monotonic() + 30
        while pool._free.qsize() < slots and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # ...until the worker is done with it.
        return withheld, pool._free.qsize()

    assert run(main()) == (slots - 1, slots)


def test_a_request_cancelled_as_the_loop_closes_leaves_no_error_behind(pool, caplog):
    big = body_of(image(800, seed=5))

    async def main():
        await pool.parse(body_of(image(8)), FLOAT)
        task = asyncio.ensure_future(pool.parse(big, FLOAT))
        await handed_to_a_worker(pool)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return pool._executor

    executor = run(main())  # the loop is closed while the worker still parses
    executor.submit(int).result(timeout=30)  # the worker is done with the cancelled body
    assert not [record for record in caplog.records if record.name == "concurrent.futures"]


def test_a_killed_worker_fails_its_request_and_the_next_one_gets_new_workers(pool):
    body = body_of(image(200))

    async def main():
        await pool.parse(body, FLOAT)
        (worker,) = pool._executor._processes.values()
        pending = asyncio.ensure_future(pool.parse(body_of(image(800)), FLOAT))
        await asyncio.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            await pending
        return await pool.parse(body, FLOAT), worker.pid, pool._executor._processes

    got, killed, processes = run(main())
    assert_same(got, json_dense.parse_dense_request(body, FLOAT))
    assert killed not in processes


def test_workers_run_at_a_lower_priority_than_the_server(pool):
    run(pool.parse(body_of(image(8)), FLOAT))
    (worker,) = pool._executor._processes.values()
    expected = min(os.getpriority(os.PRIO_PROCESS, 0) + json_workers.WORKER_NICENESS, 19)
    assert os.getpriority(os.PRIO_PROCESS, worker.pid) == expected


def test_a_slot_that_cannot_get_its_memory_fails_with_an_error_and_stays_usable(pool, monkeypatch):
    import errno

    body = body_of(image(32))

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main():
        with monkeypatch.context() as patch:
            patch.setattr(json_workers.os, "posix_fallocate", no_space)
            with pytest.raises(OSError, match="No space left"):
                await pool.parse(body, FLOAT)
        return await pool.parse(body, FLOAT)

    assert_same(run(main()), json_dense.parse_dense_request(body, FLOAT))


def test_a_pool_needs_a_process():
    with pytest.raises(ValueError, match="at least one process, got 0"):
        json_workers.JsonParsePool(0)


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "50000 100000\n"}, 1),                # cgroup v2: half a CPU of quota
    ({"cpu.max": "150000 100000\n"}, 2),               # 1.5 CPUs: two processes
    ({"cpu.max": "max 100000\n"}, None),               # no quota: the affinity
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_the_automatic_number_of_parsing_processes_follows_a_containers_cpu_quota(tmp_path, files, expected):
    from imgclf.serving import config

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert config.usable_cpus(str(tmp_path)) == (affinity if expected is None else min(affinity, expected))


def test_parsing_processes_default_to_one_per_usable_cpu_at_most_eight():
    from imgclf.serving import config

    options = config.parse_args(["--model_base_path", "/models/m"])
    assert options.json_parse_processes == min(config.usable_cpus(), config.MAX_AUTO_PARSE_PROCESSES) >= 1
    assert config.parse_args(["--model_base_path", "/m", "--json_parse_processes", "0"]).json_parse_processes == 0
