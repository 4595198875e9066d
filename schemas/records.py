"""The ledger's records and commands: plain mutable slot classes, cheap to build and copy.

Integers are Python ints holding the TigerBeetle widths (u128 ids and amounts, u64 timestamps).
Range checking of untrusted input happens where bytes become records (the Avro and HTTP
decoders), so the rules may assume well-typed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.codes import AccountFlags, Policy, TransferFlags

__all__ = [
    "UNSET",
    "Account",
    "AccountSettings",
    "Balances",
    "Transfer",
    "UpdateSettings",
]


class _Unset:
    """Marks a settings field absent from an update (distinct from None, which clears it)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


@dataclass(slots=True)
class Account:
    id: int
    ledger: int = 0
    code: int = 0
    flags: int = 0
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    reserved: int = 0
    timestamp: int = 0
    # Extensions (SPEC §3). min/max are the *declared* bounds; see `min_limit`/`max_limit`.
    policy: Policy | None = None
    min_balance: int | None = None
    max_balance: int | None = None
    settle_threshold: int | None = None
    settle_to: int | None = None
    link_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    version: int = 0
    frozen: bool = False

    def copy(self) -> Account:
        return Account(
            self.id, self.ledger, self.code, self.flags,
            self.debits_pending, self.debits_posted, self.credits_pending, self.credits_posted,
            self.user_data_128, self.user_data_64, self.user_data_32, self.reserved,
            self.timestamp, self.policy, self.min_balance, self.max_balance,
            self.settle_threshold, self.settle_to, self.link_type, dict(self.metadata),
            self.version, self.frozen,
        )  # fmt: skip

    @property
    def closed(self) -> bool:
        return bool(self.flags & AccountFlags.CLOSED)

    @property
    def min_limit(self) -> int | None:
        """The effective floor of the net balance; None means unbounded."""
        if self.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS:
            return 0
        return self.min_balance

    @property
    def max_limit(self) -> int | None:
        """The effective ceiling of the net balance; None means unbounded."""
        if self.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS:
            return 0
        return self.max_balance

    @property
    def ledger_balance(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def available_balance(self) -> int:
        return self.credits_posted - self.debits_posted - self.debits_pending

    def balances(self) -> Balances:
        return Balances(
            self.id, self.debits_pending, self.debits_posted,
            self.credits_pending, self.credits_posted,
        )  # fmt: skip

    def settings(self) -> AccountSettings:
        return AccountSettings(
            self.policy, self.min_balance, self.max_balance, self.settle_threshold,
            self.settle_to, self.link_type, dict(self.metadata),
        )  # fmt: skip


@dataclass(slots=True)
class AccountSettings:
    """The mutable part of an account's record (changed by update_settings)."""

    policy: Policy | None = None
    min_balance: int | None = None
    max_balance: int | None = None
    settle_threshold: int | None = None
    settle_to: int | None = None
    link_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class UpdateSettings:
    """A settings patch: UNSET leaves a field alone, None clears it; metadata replaces whole."""

    policy: Any = UNSET
    min_balance: Any = UNSET
    max_balance: Any = UNSET
    settle_threshold: Any = UNSET
    settle_to: Any = UNSET
    link_type: Any = UNSET
    metadata: Any = UNSET


@dataclass(slots=True)
class Transfer:
    id: int
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    pending_id: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timeout: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0
    # Extension (SPEC §4, snapshot pinning): 0 = not pinned.
    debit_account_version: int = 0
    credit_account_version: int = 0

    def copy(self) -> Transfer:
        return Transfer(
            self.id, self.debit_account_id, self.credit_account_id, self.amount,
            self.pending_id, self.user_data_128, self.user_data_64, self.user_data_32,
            self.timeout, self.ledger, self.code, self.flags, self.timestamp,
            self.debit_account_version, self.credit_account_version,
        )  # fmt: skip

    @property
    def is_post_or_void(self) -> bool:
        return bool(
            self.flags & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER)
        )

    @property
    def expires_at(self) -> int:
        """Nanosecond timestamp at which a pending transfer expires; 0 if it never does."""
        if self.timeout == 0:
            return 0
        return self.timestamp + self.timeout * 1_000_000_000


@dataclass(slots=True)
class Balances:
    """An account's four balances at one instant (after an event)."""

    account_id: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
