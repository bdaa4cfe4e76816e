"""Run one benchmark case in a fresh process: its time (min over repeats) and its own peak memory.

A case is a ``module:function`` name plus keyword arguments; the function builds the inputs and
returns a zero-argument callable, the thing timed. Peak memory is the child's peak resident set
during the timed calls above its level before them: the kernel's peak (VmHWM) is reset after the
set-up and again after the warm-up call (``/proc/self/clear_refs``), so neither another case's
allocations, the set-up's temporaries nor what a process loads once (a library's code, numba's
compiled loop) count as a call's memory; the warm-up call's own peak, that included, is reported
beside it (``first_call_peak_mib``). Nothing is estimated with tracemalloc; large allocations are
mapped on their own (``MMAP_THRESHOLD``), so memory freed is memory returned and the resident set is
the live memory. A case that raises or is killed (out of memory) comes back as ``{"error": ...}``,
so a sweep over sizes reports its limit instead of dying.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing as mp
import os
import queue as queue_module
import time
from contextlib import contextmanager

SLOW_S = 10.0  # a case whose warm-up takes longer is timed once: its noise is small beside its length
# glibc serves allocations from this size on (128 KiB, its own default before it adapts) with their own
# mappings, returned to the system when freed: a case's RSS is then its live memory, not what the allocator
# kept from the set-up or an earlier repeat (without it, one case's peak moved by 30% between runs)
MMAP_THRESHOLD = 1 << 17


@contextmanager
def _environment(**variables: str):
    """``os.environ`` with ``variables`` set, for a child started within; restored afterwards."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _reset_peak() -> int:
    """Reset the peak RSS to the current RSS (Linux >= 4.0) and return it, in KiB."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_kib("VmRSS")


def _child(target: str, kwargs: dict, repeats: int, warmup: bool, results) -> None:
    try:
        module, name = target.split(":")
        run = getattr(importlib.import_module(module), name)(**kwargs)
        base_kib, first = _reset_peak(), {}
        if warmup:
            start = time.perf_counter()
            run()
            if time.perf_counter() - start > SLOW_S:
                repeats = 1
            first = {"first_call_peak_mib": (_status_kib("VmHWM") - base_kib) / 1024}
            base_kib = _reset_peak()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        peak_kib = _status_kib("VmHWM") - base_kib
        results.put({"seconds": min(times), "peak_mib": peak_kib / 1024, **first})
    except Exception as error:  # reported as the case's result: the table shows the limit
        results.put({"error": f"{type(error).__name__}: {error}"[:200]})


def measure(target: str, *, repeats: int = 3, warmup: bool = True, **kwargs) -> dict:
    """``{"seconds", "peak_mib"}`` of ``target(**kwargs)()`` in a spawned process, or ``{"error"}``."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, kwargs, repeats, warmup, results))
    with _environment(MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD)):
        proc.start()
    while True:
        try:
            result = results.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                result = {"error": f"killed (exit code {proc.exitcode}; out of memory?)"}
                break
    proc.join()
    return result


def measure_counts(target: str, key: str, counts: tuple[int, ...], **kwargs) -> list[dict]:
    """``measure(target, key=count, **kwargs)`` for each count: runs of different lengths, whose
    difference is the time of the extra iterations or steps without set-up."""
    return [measure(target, **{key: count}, **kwargs) for count in counts]


def ratio(numerator: dict, denominator: dict, key: str) -> float | None:
    """numerator[key] / denominator[key], or None when either case failed."""
    if "error" in numerator or "error" in denominator or not denominator[key]:
        return None
    return numerator[key] / denominator[key]


def fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def cell(result: dict, key: str, spec: str = ".3f") -> str:
    return "failed" if "error" in result else fmt(result[key], spec)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
