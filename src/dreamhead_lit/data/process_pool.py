"""Jobs run in worker processes that survive the death of one: used by preprocessing, where a native library
(FFmpeg, dlib, MediaPipe) may crash on a malformed input or the OOM killer may take a worker."""
from __future__ import annotations

from typing import Callable, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def ignore_sigint() -> None:
    """Worker initialiser: Ctrl-C goes to the main process, which stops the workers itself."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_in_processes(jobs: list[Job], workers: int, handle: Callable[[Result], None], *, fn: Callable[[Job], Result],
                     on_crash: Callable[[Job, BaseException], Result]) -> None:
    """Run ``fn(job)`` in ``workers`` processes, at most ``workers`` in flight, and ``handle`` each result in the main
    process as it comes (in completion order). A job whose worker died gives ``on_crash(job, error)`` instead.

    Workers are started with "spawn": a forked child of a process that has run MediaPipe can corrupt its heap
    (seen here: glibc "malloc(): unaligned tcache chunk" in the child and a hung pool). A worker that dies (a native
    crash on a malformed file, the OOM killer) breaks the pool; the jobs that were in flight are then rerun one at
    a time in a fresh process, so the one that kills a worker is reported through ``on_crash`` and the run goes on.
    Workers ignore Ctrl-C; on Ctrl-C (or any error in the main process) the workers are stopped and it propagates.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    queue = list(reversed(jobs))  # pop() takes them in order
    suspects: list[Job] = []
    while queue or suspects:
        if suspects:  # alone in a fresh process: a second death is this job's
            job = suspects.pop(0)
            with ProcessPoolExecutor(1, mp_context=ctx, initializer=ignore_sigint) as ex:
                try:
                    res = ex.submit(fn, job).result()
                except BrokenProcessPool as err:
                    res = on_crash(job, err)
            handle(res)
            continue
        ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=ignore_sigint)
        running: dict = {}
        try:
            while queue or running:
                while queue and len(running) < workers:
                    job = queue.pop()
                    running[ex.submit(fn, job)] = job
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = running.pop(fut)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        suspects.append(job)
                        continue
                    handle(res)
                if suspects:  # the pool is broken: every job still running died with it
                    suspects.extend(running.values())
                    running.clear()
                    break
        except BaseException:
            _stop_workers(ex)
            raise
        ex.shutdown(wait=True)


def _stop_workers(ex) -> None:
    """Cancel what has not started and end the worker processes now (Ctrl-C, or an error in the main process)."""
    ex.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(ex, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        proc.terminate()
