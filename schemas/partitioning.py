"""Which partition owns an account or a transfer id: part of the wire contract.

Producers key commands by account id and pick the partition with this function (not the
client library's partitioner), so producers, processors and projections always agree.
"""

from __future__ import annotations

__all__ = ["partition_of"]

_MASK64 = (1 << 64) - 1
_GOLDEN64 = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads sequential ids evenly


def partition_of(key: int, partitions: int) -> int:
    """The owner partition of a u128 id among `partitions`."""
    mixed = ((key ^ (key >> 64)) * _GOLDEN64) & _MASK64
    return (mixed >> 32) % partitions
