"""Worker processes that parse large JSON bodies of dense numbers, through shared memory.

Parsing a 1 MB body (a 224 x 224 x 3 image in TF Serving's row format) holds Python's GIL for
about 2.5 ms even with simdjson (`imgclf.serving.json_dense`). In the server's own threads that
caps JSON at one core and, worse, makes the event loop wait for the GIL after every socket read,
so a status request queues behind the JSON load for tens of milliseconds. Worker processes have
GILs of their own; what remains is getting a body to them and the arrays back.

Through a pipe (what `ProcessPoolExecutor` does with its arguments) a 1 MB body crosses in 64 KB
pieces, one wake-up of each side per piece, and the arrays come back the same way, unpickled in
the server. Here every request in flight holds a *slot*: a memory file (`memfd_create`) that the
server and the workers map. The server copies the body into its slot (~30 us for 1 MB); the task
that crosses the pipe is a few dozen bytes naming the slot; the worker writes the arrays behind
the body in the same slot, and the server copies them out (~30 us) before it frees the slot.

The slots are anonymous and have no name: nothing is left in /dev/shm when the server is killed.
A worker opens a slot through `/proc/<server pid>/fd/<fd>`. Each slot's memory is reserved when it
is made (`posix_fallocate`), so a full memory file system refuses a slot with an error, and the
request is then parsed on a thread, instead of a SIGBUS on a write. Arrays that do not fit in the
slot come back through the pipe.

    >>> pool = JsonParsePool(processes=2)
    >>> await pool.parse(body, {"serving_default": {"input_tensor": DT_FLOAT}})
    ('', {'input_tensor': array(...)}, True)          # or None: not dense, use the general path
    >>> pool.close()

The workers import numpy and simdjson only (`json_dense`), not TensorFlow.
"""

import asyncio
import concurrent.futures
import itertools
import mmap
import multiprocessing
import os
import threading
import time

import numpy as np

from imgclf.serving import json_dense

#: Slots per worker process: one being parsed, one waiting, so a worker never idles between tasks.
SLOTS_PER_PROCESS = 2
#: Workers run this much nicer than the server: the event loop and the model come first.
WORKER_NICENESS = 5
#: Bodies larger than this are parsed on a thread: their slots would hold too much memory.
LARGEST_BODY = 16 << 20
_ALIGN = 64
_SMALLEST_SLOT = 1 << 20


def _aligned(offset):
    return -(-offset // _ALIGN) * _ALIGN


def _slot_size(body_size):
    """Room for the body and the same again for its arrays (float32 from `57.0,` takes less).

    Arrays that need more (float64, or numbers of one or two digits) come back through the pipe.
    """
    return max(2 * _aligned(body_size), _SMALLEST_SLOT)


class _Slot:
    """A memory file, mapped; it keeps its fd number for life, so a worker maps one file per slot.

    `ref` (server pid, fd, generation, size) names the current file to a worker; growing the slot
    puts a new file on the same fd and bumps the generation.
    """

    _generations = itertools.count()

    def __init__(self):
        self.fd = os.memfd_create("imgclf-json", os.MFD_CLOEXEC)
        self.size, self.map, self.ref = 0, None, None

    def fit(self, size):
        """Grow to at least `size` bytes; OSError (the slot unchanged) if memory cannot be had."""
        if size <= self.size:
            return
        fd = os.memfd_create("imgclf-json", os.MFD_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, size)  # reserve now: ENOSPC here, not SIGBUS on a write
            new_map = mmap.mmap(fd, size)
            os.dup2(fd, self.fd, inheritable=False)
        finally:
            os.close(fd)
        if self.map is not None:
            self.map.close()
        self.map, self.size = new_map, size
        self.ref = (os.getpid(), self.fd, next(self._generations), size)

    def close(self):
        if self.map is not None:
            self.map.close()
        os.close(self.fd)


class JsonParsePool:
    """`processes` workers and their slots; `parse` is a coroutine of the server's event loop."""

    def __init__(self, processes):
        if processes < 1:
            raise ValueError(f"JsonParsePool needs at least one process, got {processes}")
        self.processes = processes
        self._executor = None
        self._free = None  # asyncio.Queue of slots, made on the loop that first parses
        self._slots = []
        self._closed = False

    async def parse(self, body, signatures):
        """`json_dense.parse_dense_request(body, signatures)`, computed by a worker.

        Returns None when the body is not dense (the general path answers). Raises `OSError`
        when a slot cannot get the memory, and `concurrent.futures.process.BrokenProcessPool`
        when a worker died (the next call starts new workers).
        """
        if self._closed:
            raise RuntimeError("JsonParsePool is closed")
        loop = asyncio.get_running_loop()
        if self._free is None:
            self._free = asyncio.Queue()
            for _ in range(self.processes * SLOTS_PER_PROCESS):
                slot = _Slot()
                self._slots.append(slot)
                self._free.put_nowait(slot)
        slot = await self._free.get()
        task = None
        try:
            slot.fit(_slot_size(len(body)))
            slot.map[:len(body)] = body
            executor = self._pool()
            task = executor.submit(parse_in_slot, slot.ref, len(body), signatures)
            try:
                result = await asyncio.wrap_future(task)
            except concurrent.futures.process.BrokenProcessPool:
                if self._executor is executor:
                    self._executor = None
                raise
            return None if result is None else _arrays_from(slot, result)
        finally:
            if task is None or task.done():
                self._free.put_nowait(slot)
            else:  # cancelled while a worker may still write into the slot: free it when it is done
                task.add_done_callback(lambda _: _call_soon(loop, self._free.put_nowait, slot))

    def _pool(self):
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_init, initargs=(os.getpid(),))
        return self._executor

    def close(self):
        """Stop the workers and unmap the slots; requests still parsing get errors."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        for slot in self._slots:
            slot.close()
        self._slots = []


def _call_soon(loop, function, *args):
    """`function(*args)` on `loop`, from any thread; nothing if the loop is closed (shut down)."""
    try:
        loop.call_soon_threadsafe(function, *args)
    except RuntimeError:
        pass


def _arrays_from(slot, result):
    """(name, inputs, row_format) from a worker's answer: arrays copied out of the slot."""
    name, inputs, row_format = result
    copied = {}
    for key, value in inputs.items():
        if isinstance(value, np.ndarray):  # did not fit in the slot: came through the pipe
            copied[key] = value
        else:
            offset, shape, dtype = value
            copied[key] = np.ndarray(shape, dtype, buffer=slot.map, offset=offset).copy()
    return name, copied, row_format


# ---------------------------------------------------------------------------------------------
# In the worker process

def worker_init(parent_pid):
    """Initializer of a worker process: lower its priority, and exit when the server is gone.

    With every core busy, workers at the server's priority delay the event loop and TensorFlow:
    a status request waited 13 ms at p99 under a JSON load of a 224 px MobileNetV3, 8 ms with
    workers at `WORKER_NICENESS` (bench/RESULTS.md). A worker blocks reading its next task from
    the server; a server SIGKILLed without shutting its pool down would leave it waiting forever.
    """
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
    os.nice(WORKER_NICENESS)


_mapped = {}  # (server pid, fd) -> (generation, mmap), in a worker


def parse_in_slot(ref, body_size, signatures):
    """Parse the body at the start of slot `ref` and write its arrays behind it.

    Returns None (not dense) or (name, inputs, row_format), where each input is
    (offset, shape, dtype string) in the slot, or the array itself if it did not fit.
    """
    view = _slot_map(ref)
    body = view[:body_size]  # a copy as bytes: simdjson and bytes.translate are fastest on bytes
    dense = json_dense.parse_dense_request(body, signatures)
    if dense is None:
        return None
    name, inputs, row_format = dense
    placed, offset = {}, _aligned(body_size)
    for key, array in inputs.items():
        end = offset + array.nbytes
        if end > len(view):
            placed[key] = array
            continue
        target = np.ndarray(array.shape, array.dtype, buffer=view, offset=offset)
        target[...] = array
        del target
        placed[key] = (offset, array.shape, array.dtype.str)
        offset = _aligned(end)
    return name, placed, row_format


def _slot_map(ref):
    pid, fd, generation, size = ref
    known = _mapped.get((pid, fd))
    if known is not None and known[0] == generation:
        return known[1]
    if known is not None:  # the slot grew: a new file on the same fd
        known[1].close()
    handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR)
    try:
        view = mmap.mmap(handle, size)
    finally:
        os.close(handle)
    _mapped[(pid, fd)] = (generation, view)
    return view
