"""pytest fixtures for the pskit Python module: real ps-server shards.

`shards(n, *flags)` starts n ps-server processes on 127.0.0.1 (port 0, each
writing its address to a file), waits until each serves, and returns their
addresses; every shard started is stopped (SIGTERM, then SIGKILL) when the
test ends, passed or failed. The build directory is $PSKIT_BUILD_DIR
(default ./build); ctest sets it, and PYTHONPATH to its python/ directory.
"""

import ctypes
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

BUILD_DIR = pathlib.Path(os.environ.get("PSKIT_BUILD_DIR", "build")).resolve()
sys.path.insert(0, str(BUILD_DIR / "python"))


def ps_server():
    path = BUILD_DIR / "bin" / "ps-server"
    if not path.exists():
        pytest.fail(f"{path} is missing: build first (cmake --build build), "
                    "or set PSKIT_BUILD_DIR")
    return path


def _die_with_parent():
    """In the child: SIGTERM when pytest dies (even by SIGKILL, as ctest's
    timeout does), so no shard outlives its test."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Shards:
    def __init__(self, tmp_path):
        self._tmp = tmp_path
        self._procs = []

    def __call__(self, n, *flags, data_dir=False):
        addr_files, procs = [], []
        for i in range(n):
            addr_file = self._tmp / f"shard{len(self._procs)}.addr"
            args = [str(ps_server()), "--listen", "127.0.0.1:0",
                    "--shard_index", str(i), "--num_shards", str(n),
                    "--address_file", str(addr_file), "--log_level", "warn",
                    *flags]
            if data_dir:
                args += ["--data_dir", str(self._tmp / f"db{len(self._procs)}")]
            log = open(self._tmp / f"shard{len(self._procs)}.log", "wb")
            p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent)
            self._procs.append(p)
            procs.append(p)
            addr_files.append(addr_file)
        addresses = []
        for p, f in zip(procs, addr_files):
            deadline = time.monotonic() + 30
            while not f.exists():
                if p.poll() is not None:
                    pytest.fail(f"ps-server exited with {p.returncode}; "
                                f"log in {self._tmp}")
                if time.monotonic() > deadline:
                    pytest.fail("ps-server did not start within 30 s")
                time.sleep(0.02)
            addresses.append(f.read_text().strip())
        return addresses

    def stop_all(self):
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self._procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def shards(tmp_path):
    s = Shards(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()
