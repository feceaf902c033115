"""Run one measurement in a fresh process (clean peak memory, no warm caches) and get its result back."""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
from typing import Any, Callable, Dict, Tuple


def run_fresh(target: Callable[..., None], args: Tuple[Any, ...], what: str) -> Dict[str, Any]:
    """``target(*args, queue)`` in a spawned process; its ``queue.put`` result, or an error (not a hang) naming
    ``what`` when the process dies without one."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise SystemExit(f"measuring {what} failed (process exit code {proc.exitcode})")
    proc.join()
    return result
