"""The datapath event reader as its own process, supervised from the agent.

Polling the BPF ring buffer from a thread of the gunicorn worker made every event wait
for the worker's GIL: at 10k events/s the ring filled while request threads ran, and
events were lost. So the ring is read by a child process (``python -m datapath.events
FD``, the ring's file descriptor passed down) that only copies raw records and writes
them in batches to a pipe. In the worker, one intake thread (never a request thread)
reads the pipe, decodes a whole batch (``datapath.events.decode_batch``) and hands it to
the monitor (labels, the flow store, metrics, followers) in one call.

Nothing is lost in between without being counted: while the intake is behind, the child
blocks on the pipe and records wait in the ring; when the ring is full the BPF programs
count what they could not queue (``Datapath.events_lost``). A child that dies is noticed
at once (its pipe ends), logged as an error, counted (``restarts``) and started again
after a short back-off; records still in the ring are read by the next child. ``view()``
is what ``/v1/status`` shows.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from datapath.events import RECORD_SIZE, decode_batch

log = logging.getLogger("ciliumpy.events")
PIPE_SIZE = 1 << 20  # bytes the pipe holds while the intake decodes (~14k events)
READ_SIZE = 1 << 20
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0  # seconds before a dead reader is started again
HEALTHY_AFTER = 30.0  # a reader that ran this long starts the back-off over
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class EventReaderProcess:
    """Runs and supervises the reader child for the ring at ``ring_fd``; each batch of
    decoded events goes to ``on_batch`` in the intake thread."""

    def __init__(self, ring_fd: int, on_batch: Callable[[list[dict]], None]) -> None:
        self.ring_fd, self.on_batch = ring_fd, on_batch
        self.restarts = 0
        self.records = 0  # records read from the child
        self.partial = 0  # records cut short by a dying child (lost, counted)
        self.last_exit: int | None = None
        self.last_error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-intake", daemon=True)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "datapath.events", str(self.ring_fd)]

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # our own child, by its Popen: ends its pipe, so the thread
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()

    def alive(self) -> bool:
        return self._thread.is_alive() and self.pid is not None

    def view(self) -> dict:
        return {"pid": self.pid, "running": self.alive(), "restarts": self.restarts,
                "records": self.records, "lost_partial": self.partial,
                "last_exit": self.last_exit, "last_error": self.last_error}

    # ---- the intake thread ---------------------------------------------------------
    def _spawn(self) -> int:
        """Starts a child; the read end of its pipe."""
        read_fd, write_fd = os.pipe()
        try:
            try:
                fcntl.fcntl(read_fd, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:  # above /proc/sys/fs/pipe-max-size: the default size works
                pass
            self._proc = subprocess.Popen(self.command(), stdout=write_fd,
                                          stdin=subprocess.DEVNULL,
                                          pass_fds=(self.ring_fd,), close_fds=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds it: its end is the pipe's end
        log.info("event reader started (pid %d)", self._proc.pid)
        return read_fd

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                read_fd = self._spawn()
            except Exception as exc:
                self.last_error = f"cannot start the event reader: {exc}"
                log.error("%s", self.last_error)
            else:
                if self._stop.is_set() and self._proc is not None:
                    self._proc.terminate()  # stop() came while it was being started
                try:
                    self._drain(read_fd)
                finally:
                    os.close(read_fd)
                self._reap()
            if self._stop.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > HEALTHY_AFTER:
                backoff = BACKOFF_FIRST
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _drain(self, read_fd: int) -> None:
        """Batches from the child until its pipe ends."""
        pending = b""
        while True:
            try:
                data = os.read(read_fd, READ_SIZE)
            except InterruptedError:
                continue
            if not data:
                break
            if pending:
                data, pending = pending + data, b""
            whole = len(data) - len(data) % RECORD_SIZE
            if whole < len(data):
                pending = data[whole:]
            if not whole:
                continue
            self.records += whole // RECORD_SIZE
            try:
                self.on_batch(decode_batch(memoryview(data)[:whole]))
            except Exception:  # one bad batch must not end the intake
                log.exception("event batch handling failed")
        if pending:
            self.partial += 1

    def _reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:  # pipe closed but still running: end it
            proc.kill()
            code = proc.wait()
        self.last_exit = code
        if not self._stop.is_set():
            self.last_error = f"the event reader (pid {proc.pid}) exited with {code}"
            log.error("%s: starting it again", self.last_error)
