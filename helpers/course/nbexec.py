"""Executing notebooks headless without silent waits: the client `make run` and nbmake use, and the stall check.

The stall seen in headless runs (STACK.md "Headless execution can stall", jupyter/nbclient#312): a cell's
``execute_reply`` was sent by the kernel (its timestamp says so) and the runner received it only when its 600 s
per-cell timeout ran out, then carried on as if nothing had happened. The mechanism: nbclient waits for the reply
with one ``await shell_channel.get_msg(timeout=600)``, which is ``zmq.asyncio``'s ``socket.poll``. That poll wakes on
the socket's edge-triggered file descriptor; when the edge is missed, only the final zero-timeout poll that pyzmq
runs at the deadline sees the message, 600 s late, and nothing reports an error. ``CourseNotebookClient`` waits in
slices of ``POLL_SLICE_S`` instead, so each slice ends with that zero-timeout check: a missed wake-up costs at most
one slice. It also fails on an IOPub timeout (nbclient's default is to log a warning and move on), and
``stall_problems`` reads the timestamps nbclient records in every executed cell (``metadata.execution``) and names
any gap between one cell's reply and the next cell's start longer than ``MAX_GAP_S``.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime
from queue import Empty
from typing import Any

from nbclient import NotebookClient
from nbclient.util import run_sync

__all__ = ["POLL_SLICE_S", "MAX_GAP_S", "CourseNotebookClient", "cell_timings", "stall_problems", "timeout_cell"]

POLL_SLICE_S = 1.0  # longest a missed zmq wake-up can delay the runner
MAX_GAP_S = 60.0  # a runner that idles this long between two cells is reported as stalled


def _sliced(get_msg):
    """``get_msg(timeout)`` as a loop of polls of at most ``POLL_SLICE_S`` each, same result and same ``Empty``."""

    @functools.wraps(get_msg)
    async def get_msg_sliced(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE_S if deadline is None else min(POLL_SLICE_S, max(0.0, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get_msg_sliced


class CourseNotebookClient(NotebookClient):
    """``NotebookClient`` whose waits for kernel messages cannot hang on a missed wake-up, and whose IOPub timeout
    is an error (``raise_on_iopub_timeout``) instead of a logged warning."""

    def __init__(self, nb, km=None, **kw):
        kw.setdefault("raise_on_iopub_timeout", True)
        kw.setdefault("iopub_timeout", 30)  # seconds for the last outputs after a reply (nbclient's 4 s is tight
        kw.setdefault("record_timing", True)  # under load); the per-cell timestamps stall_problems reads
        super().__init__(nb, km=km, **kw)

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = _sliced(channel.get_msg)
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def cell_timings(nb) -> list[dict[str, Any]]:
    """Per executed code cell: ``cell`` (index), ``seconds`` (its own run time, kernel side) and ``wait_before``
    (seconds between the previous cell's reply and this cell's start: the runner's share), from nbclient's
    ``metadata.execution`` timestamps."""
    out, prev = [], None
    for i, cell in enumerate(nb.cells):
        ex = cell.get("metadata", {}).get("execution", {})
        start, reply = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if not (start and reply):
            continue
        a, b = _when(start), _when(reply)
        out.append({"cell": i, "seconds": round((b - a).total_seconds(), 3),
                    "wait_before": None if prev is None else round((a - prev).total_seconds(), 3)})
        prev = b
    return out


def stall_problems(nb, max_gap: float = MAX_GAP_S) -> list[str]:
    """Gaps longer than ``max_gap`` seconds between a cell's reply and the next cell's start, named by cell."""
    return [f"cell {t['cell']}: the runner waited {t['wait_before']:.0f} s after the previous cell's reply before "
            f"starting it (a stalled headless runner; limit {max_gap:.0f} s)"
            for t in cell_timings(nb) if t["wait_before"] is not None and t["wait_before"] > max_gap]


def timeout_cell(nb) -> int | None:
    """Index of the code cell that was running when execution stopped: the first with a start and no reply, else
    the first code cell that never started."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        ex = cell.get("metadata", {}).get("execution", {})
        if "shell.execute_reply" not in ex:
            return i
    return None
