"""`owned_by` is `partition_of` compared with one partition, for every id and count."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.partitioning import owned_by, partition_of


@given(key=st.integers(0, (1 << 128) - 1), partitions=st.integers(1, 64), data=st.data())
def test_owned_by_agrees_with_partition_of(key: int, partitions: int, data: st.DataObject) -> None:
    partition = data.draw(st.integers(0, partitions - 1))
    assert owned_by(partition, partitions)(key) == (partition_of(key, partitions) == partition)
