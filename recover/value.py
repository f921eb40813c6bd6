"""The base of the values a scan makes for every file, process and container."""

from __future__ import annotations

import msgspec


class Value(msgspec.Struct, frozen=True, gc=False):
    """A value: nothing changes one once it is made, and it hashes and compares by its fields.

    A msgspec Struct, not a dataclass: its __init__ is C, about 0.8k instructions against 2.4k
    for a slotted dataclass's (a frozen dataclass's sets each field through object.__setattr__,
    five times that), and a 0.2 scan makes some forty of them for every container.  Those made
    on the hot path are built by position: a new field goes last.

    Not tracked by the cycle collector (gc=False): a value refers only to what was made before
    it (other values, strings, tuples, the dict of a decoded file), never back, so no value is
    part of a cycle; untracked, each costs less to make and free, and leaves the collector less
    to walk (1.5% of a 0.2 scan's instructions)."""
