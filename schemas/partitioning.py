"""Which partition owns an account or a transfer id: part of the wire contract.

Producers key commands by account id and pick the partition with this function (not the
client library's partitioner), so producers, processors and projections always agree.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["owned_by", "partition_of"]

_MASK64 = (1 << 64) - 1
_GOLDEN64 = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads sequential ids evenly


def partition_of(key: int, partitions: int) -> int:
    """The owner partition of a u128 id among `partitions`."""
    mixed = ((key ^ (key >> 64)) * _GOLDEN64) & _MASK64
    return (mixed >> 32) % partitions


def owned_by(partition: int, partitions: int) -> Callable[[int], bool]:
    """`key -> partition_of(key, partitions) == partition`, in one call: folds ask it several
    times per event (the call of partition_of cost a sixth of a projection's fold)."""
    if partitions == 1:
        return lambda _key: True

    def owns(key: int) -> bool:
        return ((((key ^ (key >> 64)) * _GOLDEN64) & _MASK64) >> 32) % partitions == partition

    return owns
