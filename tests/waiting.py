"""Waiting in tests: on an event or a state, never on the clock.

A test that waits says what it waits for (a line printed, a file's state, a process gone); the deadline is
only a safety net against a hang, far beyond what a working product needs on the slowest or busiest machine,
and reaching it fails the test with what was seen meanwhile.
"""

from __future__ import annotations

import codecs
import os
import threading
import time
from typing import Callable, Optional, TypeVar

import pytest

SAFETY_NET_S = 600.0  # a hang, not a slow machine: the suite's slowest wait takes a small fraction of it

T = TypeVar("T")


def wait_until(condition: Callable[[], T], waiting_for: str, seen: Callable[[], object] = lambda: "",
               timeout_s: float = SAFETY_NET_S, poll_s: float = 0.05) -> T:
    """Call `condition` until it returns something true, and return that; fail after `timeout_s` naming what
    was awaited and what `seen()` shows then."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:.0f} s for {waiting_for}; seen: {seen()}", pytrace=False)
        time.sleep(poll_s)
    return value


def join_or_fail(thread: threading.Thread, what: str, timeout_s: float = SAFETY_NET_S) -> None:
    thread.join(timeout_s)
    if thread.is_alive():
        pytest.fail(f"{what} still running after {timeout_s:.0f} s", pytrace=False)


class StreamWatch:
    """Reads a pipe (a child's stderr) in a thread, so that a test can wait for a piece of text with a
    deadline that holds even when the stream stays silent, then collect the rest once it closes."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._text = ""
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # whatever the pipe holds, as it comes (a text stream's read(n) would wait for n characters)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while chunk := os.read(self._stream.fileno(), 65536):
                with self._changed:
                    self._text += decoder.decode(chunk)
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return self._text

    def wait_for(self, text: str, timeout_s: float = SAFETY_NET_S) -> str:
        """Everything read once `text` has appeared; fails if the stream closes or the deadline passes first."""
        with self._changed:
            self._changed.wait_for(lambda: text in self._text or self._closed, timeout_s)
            if text not in self._text:
                why = "the stream closed" if self._closed else f"{timeout_s:.0f} s passed"
                pytest.fail(f"{text!r} never came ({why}); the stream ended with:\n{self._text[-3000:]}",
                            pytrace=False)
            return self._text

    def rest(self, timeout_s: Optional[float] = SAFETY_NET_S) -> str:
        """Everything read, once the stream has closed (its writer exited)."""
        join_or_fail(self._thread, "reading the stream to its end", timeout_s)
        return self.text
