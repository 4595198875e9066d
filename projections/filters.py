"""TigerBeetle's read filters and balance entry, with TigerBeetle's field names.

Semantics: ../shared/reference/tigerbeetle-semantics.md §4.6. A filter that TigerBeetle would
call invalid selects nothing (an empty answer, never an error). The flags are booleans here
(`debits`, `credits`, `reversed`); the HTTP layer maps query parameters onto them.

The defaults are the convenient ones (both sides, the largest limit), not TigerBeetle's
zeroes, which would make a filter invalid: callers that take a user's filter verbatim must
pass every field they were given.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import BATCH_EVENTS_MAX, TIMESTAMP_MAX, U128_MAX, Balances

__all__ = ["AccountFilter", "BalanceEntry", "BalancesAtOffset", "QueryFilter", "effective_limit"]


def _timestamps_valid(timestamp_min: int, timestamp_max: int) -> bool:
    # 0 means unbounded; anything else must be a valid timestamp, and the range non-empty.
    if timestamp_min != 0 and not 1 <= timestamp_min <= TIMESTAMP_MAX:
        return False
    if timestamp_max != 0 and not 1 <= timestamp_max <= TIMESTAMP_MAX:
        return False
    return timestamp_max == 0 or timestamp_min <= timestamp_max


def effective_limit(limit: int) -> int:
    """How many results a valid filter may return: TigerBeetle caps a reply at one batch."""
    return min(limit, BATCH_EVENTS_MAX)


@dataclass(frozen=True, slots=True)
class AccountFilter:
    """get_account_transfers / get_account_balances."""

    account_id: int
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    code: int = 0
    timestamp_min: int = 0  # inclusive; 0 = unbounded
    timestamp_max: int = 0  # inclusive; 0 = unbounded
    limit: int = BATCH_EVENTS_MAX
    debits: bool = True
    credits: bool = True
    reversed: bool = False

    def valid(self) -> bool:
        return (
            0 < self.account_id < U128_MAX
            and self.limit > 0
            and (self.debits or self.credits)
            and _timestamps_valid(self.timestamp_min, self.timestamp_max)
        )


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """query_accounts / query_transfers: the intersection of the non-zero fields."""

    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    ledger: int = 0
    code: int = 0
    timestamp_min: int = 0  # inclusive; 0 = unbounded
    timestamp_max: int = 0  # inclusive; 0 = unbounded
    limit: int = BATCH_EVENTS_MAX
    reversed: bool = False

    def valid(self) -> bool:
        return self.limit > 0 and _timestamps_valid(self.timestamp_min, self.timestamp_max)


@dataclass(frozen=True, slots=True)
class BalancesAtOffset:
    """An account's balances as of a log position: after the messages up to `offset` of
    `partition`, the events partition that owns the account."""

    balances: Balances
    timestamp: int  # of the last transfer event they reflect; 0 if none
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class BalanceEntry:
    """An account's balances right after one transfer (TigerBeetle's AccountBalance)."""

    timestamp: int  # the transfer's
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
