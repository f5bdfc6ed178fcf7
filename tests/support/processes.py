"""Ending the processes a test started: politely (SIGTERM), then for sure (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM ``proc`` (by its own pid, nothing else), SIGKILL it if it is still
    running after ``timeout`` s, and reap it."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
