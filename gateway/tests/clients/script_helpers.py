"""Helpers shared by the client scripts in this directory (each run by
gateway/tests/python_clients.rs)."""

import time


def log(msg):
    """A timestamped progress line, flushed at once (the test shows it if the script fails)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(cond, msg):
    """Fails the script with `msg` unless `cond` holds."""
    if not cond:
        raise AssertionError(msg)
