"""Unique ids without a system call each: a random prefix per process and a counter.

`os.urandom` costs a system call (about 10 µs here), and a call made three ids. The prefix is
drawn again in a forked child, so workers forked from one parent never share a sequence.
"""

from __future__ import annotations

import itertools
import os

_prefix = os.urandom(10).hex()
_counter = itertools.count(1)


def unique_id() -> str:
    """32 hex characters of which the first 20 are random per process; never repeats in it."""
    return f"{_prefix}{next(_counter):012x}"


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(10).hex()
    _counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed)
