"""Which process owns a run: its host, pid and start time, so a dead owner is recognised even when its pid has
been given to a new process since.

The start time is field 22 of ``/proc/<pid>/stat`` (clock ticks after boot); where there is no ``/proc`` it is
unknown and only the pid is checked.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


def _process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process from ``/proc``; None when it does not exist."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: the fields after it start after the last ')'
    fields = stat.rpartition(")")[2].split()
    return fields[0], int(fields[19])


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Owner:
    """A process that queued or runs a run; stored in the ``owner`` column as ``host:pid:start``."""

    host: str
    pid: int
    started: int | None

    @classmethod
    def current(cls) -> Owner:
        state = _process_state(os.getpid())
        return cls(socket.gethostname(), os.getpid(), state[1] if state else None)

    @classmethod
    def parse(cls, text: str) -> Owner:
        """Read an ``owner`` column; stores written before start times were recorded hold ``host:pid``."""
        host, pid, *started = text.split(":")
        return cls(host, int(pid), int(started[0]) if started and started[0] else None)

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{'' if self.started is None else self.started}"

    def described(self) -> str:
        """The process as a run's log names it: "process 1508 on vm"."""
        return f"process {self.pid} on {self.host}"

    def alive(self) -> bool:
        """Whether this process still runs. A process on another host is taken to be alive: it is not ours to
        judge. A zombie (killed, not yet reaped) is dead."""
        if self.host != socket.gethostname():
            return True
        if not (_PROC / "self" / "stat").exists():
            return _pid_exists(self.pid)
        state = _process_state(self.pid)
        if state is None or state[0] in "ZX":
            return False
        return self.started is None or state[1] == self.started
