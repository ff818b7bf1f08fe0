"""Runs the ``rotator`` command line in this process, counted or profiled, for the benchmarks.

``python bench/inproc.py [--count-store OUT.json] [--profile OUT.pstats] -- ARGS...`` runs
``rotator ARGS...`` (``rotator.cli.main``, the console script's own entry point) and, when it
ends, writes what was asked:

- ``--count-store``: every call of a public method on the engine's state store, by method name.
  The store is wrapped where the engine receives it (the ``store`` of
  :class:`rotator.engine.context.Deps`), so whatever class implements the ``StateStore``
  protocol is counted, and methods added to it later are counted too. By the protocol's
  contract each write method is one transaction.
- ``--profile``: one ``cProfile.Profile(time.thread_time)`` per thread (the main thread from
  the start, every later thread through ``threading.setprofile``), merged into one pstats file:
  thread CPU time, not wall time.

The exit status is the command's.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import inspect
import json
import pstats
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any


class CountingStore:
    """A state store that counts each public method call, then delegates it."""

    def __init__(self, inner: Any, counts: Counter[str]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr
        counts = self._counts
        if inspect.iscoroutinefunction(attr):

            @functools.wraps(attr)
            async def counted_async(*args: Any, **kwargs: Any) -> Any:
                counts[name] += 1
                return await attr(*args, **kwargs)

            return counted_async

        @functools.wraps(attr)
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return attr(*args, **kwargs)

        return counted


def count_store(counts: Counter[str]) -> None:
    """Wrap the store of every engine built from now on in a :class:`CountingStore`."""
    from rotator.engine.context import Deps

    init = Deps.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.store = CountingStore(self.store, counts)

    Deps.__init__ = counting_init  # type: ignore[method-assign]


class ThreadProfiles:
    """One profiler per thread, CPU time (``time.thread_time``)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._enable()
        threading.setprofile(self._first_event)

    def _enable(self) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def _first_event(self, *_: Any) -> None:
        sys.setprofile(None)  # replaced by this thread's own profiler
        self._enable()

    def dump(self, path: Path) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        with self._lock:
            profiles = list(self.profiles)
        profiles[0].disable()  # the main thread's; the others have ended or are idle
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count-store", type=Path, help="write the store calls here (JSON)")
    parser.add_argument("--profile", type=Path, help="write the merged profile here (pstats)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then rotator's arguments")
    args = parser.parse_args()
    argv = args.args[1:] if args.args[:1] == ["--"] else args.args
    profiles = ThreadProfiles() if args.profile else None
    if profiles is not None:
        profiles.start()  # before rotator is imported: its imports are part of its CPU
    counts: Counter[str] = Counter()
    if args.count_store:
        count_store(counts)
    from rotator.cli import main as rotator_main

    try:
        rotator_main(argv)
    finally:
        if profiles is not None:
            profiles.dump(args.profile)
        if args.count_store:
            args.count_store.write_text(json.dumps(dict(counts), indent=2) + "\n")


if __name__ == "__main__":
    main()
