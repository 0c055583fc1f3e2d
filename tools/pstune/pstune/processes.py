"""pstune.processes: the trials' worker and evaluator processes. Each runs
in its own session (so its process group holds a --worker_command wrapper's
children too), writes its output to a log file that starts with its command
line, and gets SIGTERM when the driver dies, even by SIGKILL
(PR_SET_PDEATHSIG). stop() ends whole process groups: SIGTERM, then SIGKILL
after a grace period (at once after a second signal: Proc.hurry).
"""

import ctypes
import os
import shlex
import signal
import subprocess
import time
from typing import Dict, List, Optional, Sequence


class DriverError(RuntimeError):
    """The search cannot go on; the message says why and what to do."""


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl   # looked up once, in the parent


def _die_with_parent(parent: int):
    """The child's preexec_fn: SIGTERM when the driver dies (even by
    SIGKILL), so no worker outlives it. It only calls prctl (nothing that
    may take a lock another thread of the parent held at fork), then checks
    that the driver did not die before the prctl took effect."""
    def preexec():
        _PRCTL(1, signal.SIGTERM)       # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)
    return preexec


class Proc:
    """One worker or evaluator process, its output in a log file."""
    hurry = False                   # a second signal: SIGKILL without grace

    def __init__(self, label: str, argv: List[str], env: Dict[str, str], log: str,
                 evaluator: bool):
        self.label, self.log, self.evaluator = label, log, evaluator
        self.stopped_by_us = False
        self.group_done = False     # its process group is known to be empty
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "ab") as f:
            f.write(("$ " + " ".join(shlex.quote(a) for a in argv) + "\n").encode())
            f.flush()
            try:
                self.popen = subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=f,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()))
            except OSError as e:
                raise DriverError(f"cannot start {argv[0]}: {e.strerror} (give the "
                                  "program with --ps_worker or --worker_command)") from None

    def poll(self) -> Optional[int]:
        return self.popen.poll()

    def last_line(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log) - 2000))
                lines = [l for l in f.read().decode("utf-8", "replace").splitlines()
                         if l.strip()]
            return lines[-1].strip() if lines else ""
        except OSError:
            return ""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:     # the group id was taken by someone else's
        return False


def stop(procs: Sequence[Proc], grace_s: float = 15.0) -> None:
    """SIGTERM to the process group of every process (each leads its own
    session, so a --worker_command wrapper's children are stopped too),
    SIGKILL to the groups still alive after grace_s; returns once the
    processes have exited and their groups are empty (or, for groups whose
    reparented members nobody reaps, after a few more seconds)."""
    groups = [p for p in procs if not p.group_done]
    for p in groups:
        if p.poll() is None:
            p.stopped_by_us = True
        try:
            os.killpg(p.popen.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            p.group_done = p.poll() is not None
    deadline = time.monotonic() + grace_s
    killed_at = None
    while True:
        left = []
        for p in groups:
            if p.group_done:
                continue
            if p.poll() is None or group_alive(p.popen.pid):
                left.append(p)
            else:
                p.group_done = True
        if not left:
            return
        now = time.monotonic()
        if killed_at is None and (now > deadline or Proc.hurry):
            for p in left:
                try:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            killed_at = now
        elif killed_at is not None and now - killed_at > 5:
            for p in left:
                if p.poll() is not None:
                    p.group_done = True    # zombies left to init
            if all(p.group_done for p in left):
                return
        time.sleep(0.05)
