"""Timed on/off patterns played on output pins in a background thread.

A status light blinking while the station is busy, or a buzzer's three error beeps,
must not hold up the caller; the thread keeps absolute deadlines (no drift over many
cycles) and stops within one wait when told to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

Levels = tuple[bool, ...]
Step = tuple[Levels, float]
"""The levels of every output of the device, held for so many seconds."""

JOIN_TIMEOUT_S = 2.0


class PatternPlayer:
    """Plays steps through ``apply`` (which sets the device's outputs)."""

    def __init__(self, apply: Callable[[Levels], None], name: str) -> None:
        self._apply = apply
        self._name = name
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def play(
        self, steps: Sequence[Step], repeat: int | None, final: Levels, background: bool = True
    ) -> None:
        """Play ``steps`` ``repeat`` times (None: until stopped), then set ``final``.
        With ``background`` False, return only when done."""
        if repeat is not None and repeat < 0:
            raise ValueError("repeat must be >= 0 or None")
        if any(seconds < 0 for _, seconds in steps):
            raise ValueError("step durations must be >= 0")
        if repeat is None and not background:
            raise ValueError("an endless pattern can only play in the background")
        with self._lock:
            self._halt()
            self._stop = stop = threading.Event()
            args = (list(steps), repeat, final, stop)
            if background:
                self._thread = threading.Thread(
                    target=self._run, args=args, name=self._name, daemon=True
                )
                self._thread.start()
                return
        self._run(*args)  # in the caller's thread; stop() from another thread still works

    def _run(
        self, steps: list[Step], repeat: int | None, final: Levels, stop: threading.Event
    ) -> None:
        deadline = time.monotonic()
        done = 0
        while (repeat is None or done < repeat) and not stop.is_set():
            for levels, seconds in steps:
                self._apply(levels)
                deadline += seconds
                if stop.wait(max(0.0, deadline - time.monotonic())):
                    return  # stopped: whoever stopped us sets the outputs
            done += 1
        self._apply(final)

    def _halt(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=JOIN_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the pattern (the outputs stay as they were: set them next)."""
        with self._lock:
            self._halt()

    @property
    def playing(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wait(self, timeout: float) -> bool:
        """Wait for a finite pattern to end; False if it still plays after ``timeout``."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
