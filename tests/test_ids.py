"""`lumen.ids.unique_id`: unique in a process, and a forked worker draws a prefix of its own."""

from __future__ import annotations

import os

from lumen.ids import unique_id


def test_ids_do_not_repeat() -> None:
    ids = [unique_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)


def test_a_forked_child_does_not_continue_its_parents_sequence() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, unique_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    parent = unique_id()
    assert child[:20] != parent[:20]
