"""Where the study's runs execute: each independent (task, mixer, seed) run on one thread, several runs at once.

Why one thread: the study's models are small, and on a shared 2-core machine torch's OpenMP threads and numba's
threads spin against each other and against other jobs (a digits SSM run took 955 s at torch's default 2 threads,
48 s at 1). A run on one intra-op thread (torch and numba) also does its arithmetic in the same order on every
machine, whatever its core count, so its numbers do not depend on where it ran. Parallelism comes from running
independent runs side by side instead: `workers` processes (started with "spawn", so nothing of the parent's
thread pools is inherited), as many as there are free cores. A run gives the same result in a worker process as in
this process (`workers=1`), which is tested.

- `machine_load()`: usable cores (`os.sched_getaffinity`) and the 1-minute load average.
- `free_cores()`: usable cores minus the load, at least 1: the default number of workers.
- `busy_cores()`: cores other work keeps busy now (measured over a fraction of a second, not the load average).
- `busy_warning(threads)`: a one-line note when other work takes a core of those `threads` need.
- `one_thread()`: pin this process's torch and numba to one thread for a block (the `workers=1` path, timings).
- `run_jobs(fn, shared, jobs, workers, on_done, later)`: `fn(shared, job)` for every job, longest (`job.weight`)
  first, and for the jobs `later` brings as they come.
- `compile_kernels_aside()`: numba's kernels (the SSM's, the depthwise conv's) compiled in another process meanwhile.
- `SetUpAside`: a task with a slow set-up (the line) made in another process while the other tasks' runs train.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mambaout.engine.allocator import keep_freed_memory

# What a BLAS or OpenMP library reads when it starts (`one_thread` sets these for the libraries a block loads; not
# numba's, which numba refuses to see change once its threads run)
POOL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
THREAD_ENV = (*POOL_ENV, "NUMBA_NUM_THREADS")  # a spawned process's, set before its libraries start


def machine_load() -> tuple[int, float]:
    """(cores this process may run on, 1-minute load average; 0.0 where the OS does not say)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return cores, load


def free_cores() -> int:
    """Usable cores not already busy with other work: cores minus the whole part of the load average, at least 1.

    A fraction of a core's load (often this very command starting up) does not take a worker away; one-thread
    workers that do share a core only take turns, they do not spin against each other as OpenMP threads do.
    """
    cores, load = machine_load()
    return max(1, min(cores, cores - int(load)))


def cpu_ticks(stat: str) -> dict[int, tuple[int, int]]:
    """Per CPU of a `/proc/stat` text: (busy, total) jiffies since boot; idle and iowait are not busy.

    Example:
        >>> cpu_ticks("cpu  9 0 9 9 0 0 0 0\ncpu0 4 0 1 5 2 0 0 0 0 0\n")
        {0: (5, 12)}
    """
    out = {}
    for line in stat.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and len(values) >= 5:
            v = [int(x) for x in values[:8]]
            out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def busy_cores(window_s: float = 0.3, stat: str = "/proc/stat") -> float | None:
    """Cores kept busy by other work right now: the non-idle share of this process's usable CPUs over `window_s`
    (Linux `/proc/stat`, per CPU), while this process sleeps; None where the OS does not say.

    Unlike the load average, this does not remember the last minute: just after the study's own workers finish the
    load average still says 2 on 2 cores, while the cores are idle."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    try:
        with open(stat) as f:
            before = cpu_ticks(f.read())
        time.sleep(window_s)
        with open(stat) as f:
            after = cpu_ticks(f.read())
    except (OSError, ValueError):
        return None
    mine = [c for c in cpus if c in before and c in after]
    busy = sum(after[c][0] - before[c][0] for c in mine)
    total = sum(after[c][1] - before[c][1] for c in mine)
    return len(mine) * busy / total if mine and total > 0 else None


def busy_warning(threads: int, what: str = "timings") -> str | None:
    """A note when other work takes a core of the ones `threads` need (more than half of it, measured now), else None.

    What counts is the work running now (`busy_cores`); the load average only where the OS says nothing better."""
    cores, load = machine_load()
    busy = busy_cores()
    if busy is None:  # the load average counts this process too: a whole core more
        measure, taken = f"load average {load:.1f} on {cores} cores", load - 1.0
    else:  # measured while this process slept: other work only
        measure, taken = f"other work kept {busy:.1f} of {cores} cores busy just now", busy - 0.5
    if taken <= cores - threads:
        return None
    return (
        f"the machine is loaded ({measure}, {threads} thread"
        f"{'s' if threads != 1 else ''} asked): other jobs share the cores, so the {what} are pessimistic and noisier; "
        "rerun when it is quiet for numbers to compare"
    )


def _pin_to_one_thread() -> Callable[[], None]:
    """torch's intra-op threads, numba's and every BLAS and OpenMP pool loaded already (threadpoolctl: NumPy's and
    SciPy's OpenBLAS, which scikit-learn's probes and metrics use) to one thread; returns what restores them."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    pools = threadpool_limits(1)

    def restore() -> None:
        pools.restore_original_limits()
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)

    return restore


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one thread: torch, numba and the pools loaded already (`_pin_to_one_thread`), and those the
    block loads (their variables in `POOL_ENV` set to 1); restores all of them afterwards."""
    saved = {name: os.environ.get(name) for name in POOL_ENV}
    os.environ.update(dict.fromkeys(POOL_ENV, "1"))
    restore = _pin_to_one_thread()
    try:
        yield
    finally:
        restore()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class SetUpAside:
    """A task whose set-up is slow (the built-in line: its video, encoder and patch bank, one to two minutes of one
    core), made in a spawned one-thread process while other tasks' runs train, instead of before them.

    `factory(**kwargs)` builds the task there; `after(task)`, a picklable callable, then measures what the caller
    wants to know of it there (the study: its runs' estimated seconds); both go to `path` (`torch.save`, written whole
    or not at all). This object is what the study's workers receive in place of the task: `task()` loads it, once per
    process. `build()` makes it here instead (one thread: the same numbers as aside).

    Example:
        >>> line = SetUpAside(LineTask, dict(work_dir="out/line"), "out/line/task.pt").start()  # doctest: +SKIP
        >>> line.ready()  # None while it is being set up, then (the task, None)  # doctest: +SKIP
    """

    def __init__(self, factory: Callable[..., Any], kwargs: dict[str, Any], path: str | os.PathLike, name: str = ""):
        self.factory, self.kwargs, self.path = factory, dict(kwargs), os.fspath(path)
        self.name = name or factory.name
        self._process: Any = None
        self._loaded: tuple[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _process=None, _loaded=None)

    def build(self) -> Any:
        with one_thread():
            task = self.factory(**self.kwargs)
        task.name = self.name
        return task

    def start(self, after: Callable[[Any], Any] | None = None) -> SetUpAside:
        import multiprocessing

        self._process = multiprocessing.get_context("spawn").Process(
            target=_set_up, args=(self, after), name=f"set up {self.name}", daemon=True
        )
        self._process.start()
        return self

    def ready(self) -> tuple[Any, Any] | None:
        """(the task, what `after` returned) once the set-up is done, None while it runs; RuntimeError if it failed."""
        if self._loaded is None:
            if self._process is not None:
                if self._process.is_alive():
                    return None
                if self._process.exitcode != 0:
                    raise RuntimeError(
                        f"setting up the {self.name} task failed (exit code {self._process.exitcode}; its error is "
                        "printed above)"
                    )
            import torch

            saved = torch.load(self.path, weights_only=False)  # our own file, written by `_set_up`
            self._loaded = (saved["task"], saved["after"])
        return self._loaded

    def task(self) -> Any:
        ready = self.ready()
        if ready is None:
            raise RuntimeError(f"the {self.name} task is still being set up")
        return ready[0]


def _set_up(aside: SetUpAside, after: Callable[[Any], Any] | None) -> None:
    _spawned_start()
    import torch

    task = aside.build()
    tmp = aside.path + ".tmp"
    torch.save(dict(task=task, after=after(task) if after else None), tmp)
    os.replace(tmp, aside.path)


_worker_state: dict[str, Any] = {}


def _spawned_start() -> None:
    """A spawned process's start: every library with a thread pool to one thread, and freed memory kept for the next
    step (`engine/allocator.py`). The environment is set before the libraries are imported here, but a process may
    have imported torch and NumPy already, while unpickling its target's arguments (the set-up aside's `after`, a
    worker's tasks), so torch, numba and the thread pools already loaded are pinned too: torch had 2 threads there and
    a line sweep ran 14x slower, spinning against both workers; NumPy's OpenBLAS had 2 and the line's memory probe
    (scikit-learn's logistic regression) took 0.6-1.5 s a run instead of 0.2-0.5 with two workers side by side."""
    os.environ.update(dict.fromkeys(THREAD_ENV, "1"))
    keep_freed_memory()
    _pin_to_one_thread()


def _compile_kernels(ssm: bool) -> None:
    _spawned_start()
    from mambaout.mixers.depthwise_grad import compile_kernels as compile_depthwise

    if ssm:
        from mambaout.ssm.fused import compile_kernels

        compile_kernels(parallel=False)
    compile_depthwise()


def compile_kernels_aside(ssm: bool = True) -> Any:
    """Start compiling the SSM's numba kernels (with `ssm`) and the depthwise conv's weight gradient
    (`mixers/depthwise_grad.py`) into numba's cache in a spawned process; `joined(process)` before the first run. The
    study trains on one thread and scans below 2^24 state updates only, so the serial builds suffice: on a fresh
    machine ~5 s of one core for the SSM's and 1.5 s for the depthwise kernel, which this overlaps with the tasks'
    set-up (the line's video and encoder, which leave part of a core free); with the cache filled it only loads them
    (~4 s, the imports included)."""
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(
        target=_compile_kernels, args=(ssm,), name="compile numba kernels", daemon=True
    )
    process.start()
    return process


def joined(process: Any) -> str | None:
    """Wait for a `compile_kernels_aside` process; a one-line note if it failed (the first scan then compiles)."""
    process.join()
    if process.exitcode == 0:
        return None
    return f"compiling the SSM's kernels aside failed (exit code {process.exitcode}); the first SSM run compiles them"


def _init_worker(fn: Callable[[Any, Any], Any], shared: Any) -> None:
    """Worker start-up (`_spawned_start`), then keep what each job needs."""
    _spawned_start()
    import torch

    with contextlib.suppress(RuntimeError):  # only settable before the first inter-op use
        torch.set_num_interop_threads(1)
    _worker_state.update(fn=fn, shared=shared)


def _call_in_worker(job: Any) -> Any:
    return _worker_state["fn"](_worker_state["shared"], job)


def run_jobs(
    fn: Callable[[Any, Any], Any],
    shared: Any,
    jobs: Sequence[Any],
    workers: int,
    on_done: Callable[[Any, Any], None] | None = None,
    later: Callable[[], list[Any] | None] | None = None,
    on_start: Callable[[Any], None] | None = None,
) -> list[Any]:
    """`fn(shared, job)` for every job: here on one thread if `workers == 1`, else in `workers` spawned processes.

    `fn` must be a module-level function and `shared` picklable (it is sent to each worker once); of the jobs waiting,
    the longest (their `weight`) starts first, so the last one to finish is a short one. `later`, if given, is asked
    (about twice a second, and whenever a job ends) for jobs that could not be made at the start (those of a task still
    being set up aside): it returns the ones it has now (a list, maybe empty), or None once no more will come.
    `on_start(job)` and `on_done(job, result)` are called in this process as each job starts and finishes. Returns the
    results in the order of `jobs`, then of the jobs `later` gave.

    Example:
        >>> run_jobs(pow, 2, [3, 4], workers=1)  # doctest: +SKIP
        [8, 16]
    """
    jobs = list(jobs)
    waiting = list(range(len(jobs)))
    results: dict[int, Any] = {}

    def arrived(block: bool) -> bool:
        """Take the jobs `later` has now into the waiting list (if `block`, wait until it has some); True once no
        more will come."""
        nonlocal later
        while later is not None:
            more = later()
            if more is None:
                later = None
            elif more:
                waiting.extend(range(len(jobs), len(jobs) + len(more)))
                jobs.extend(more)
                return False
            elif not block:
                return False
            else:
                time.sleep(0.5)
        return True

    def next_job() -> int:
        i = max(waiting, key=lambda k: (getattr(jobs[k], "weight", 0), -k))
        waiting.remove(i)
        if on_start:
            on_start(jobs[i])
        return i

    if workers <= 1:
        with one_thread():
            while True:
                arrived(block=not waiting)
                if not waiting:
                    break
                i = next_job()
                results[i] = fn(shared, jobs[i])
                if on_done:
                    on_done(jobs[i], results[i])
        return [results[i] for i in range(len(jobs))]
    import concurrent.futures as cf
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(fn, shared))
    running: dict[cf.Future, int] = {}
    try:
        while True:
            done = arrived(block=not waiting and not running)
            while waiting and len(running) < workers:
                i = next_job()
                running[pool.submit(_call_in_worker, jobs[i])] = i
            if not running:
                break
            finished, _ = cf.wait(running, timeout=None if done else 0.5, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                i = running.pop(future)
                results[i] = future.result()
                if on_done:
                    on_done(jobs[i], results[i])
    except BaseException:
        # Ctrl-C or a failed run: stop the workers now instead of waiting for their runs to finish
        # (the executor has no public way to; its `_processes` maps pid -> Process).
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown()
    return [results[i] for i in range(len(jobs))]
