"""Merging per-partition answers for the router above the projections.

Account and transfer queries go to the owning partition alone. The ledger-wide ones
(query_accounts, query_transfers) are asked of every partition with the same filter; each
answer is already in timestamp order (newest first when `reversed`) and cut at the limit, and
timestamps are unique across the ledger, so a k-way merge cut at the limit is the ledger's
answer. Lookups by many ids are answered in request order, missing ids omitted.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import TypeVar

from projections.filters import QueryFilter, effective_limit
from schemas import Account, Transfer

__all__ = [
    "in_request_order",
    "merge_by_timestamp",
    "merge_query_accounts",
    "merge_query_transfers",
]

T = TypeVar("T")


def merge_by_timestamp(
    answers: Iterable[Sequence[T]],
    timestamp_of: Callable[[T], int],
    *,
    reverse: bool,
    limit: int,
) -> list[T]:
    """Merge answers sorted by timestamp (descending if `reverse`) and keep the first `limit`."""
    merged = heapq.merge(*answers, key=timestamp_of, reverse=reverse)
    return list(islice(merged, max(limit, 0)))


def _account_timestamp(account: Account) -> int:
    return account.timestamp


def _transfer_timestamp(transfer: Transfer) -> int:
    return transfer.timestamp


def merge_query_accounts(answers: Iterable[Sequence[Account]], f: QueryFilter) -> list[Account]:
    """query_accounts over the whole ledger from every partition's answer to `f`."""
    if not f.valid():
        return []
    return merge_by_timestamp(
        answers, _account_timestamp, reverse=f.reversed, limit=effective_limit(f.limit)
    )


def merge_query_transfers(answers: Iterable[Sequence[Transfer]], f: QueryFilter) -> list[Transfer]:
    """query_transfers over the whole ledger from every partition's answer to `f`."""
    if not f.valid():
        return []
    return merge_by_timestamp(
        answers, _transfer_timestamp, reverse=f.reversed, limit=effective_limit(f.limit)
    )


def in_request_order(ids: Iterable[int], found: Mapping[int, T]) -> list[T]:
    """lookup_accounts / lookup_transfers: the objects found, in request order (a repeated id
    repeats), missing ids silently omitted."""
    return [found[i] for i in ids if i in found]
