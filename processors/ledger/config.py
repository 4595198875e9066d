"""Ledger configuration the rules depend on: assets per ledger and settlement accounts."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_ASSET", "SETTLEMENT_ACCOUNT_BASE", "Asset", "LedgerConfig"]

# Default settlement account of ledger L: 2^126 + L (SPEC §3).
SETTLEMENT_ACCOUNT_BASE = 1 << 126


@dataclass(frozen=True, slots=True)
class Asset:
    code: str
    scale: int  # decimal places of the minor unit, 0-255


# ISO 4217's "no currency": what a ledger shows until configuration names its asset.
DEFAULT_ASSET = Asset("XXX", 0)


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    assets: dict[int, Asset] = field(default_factory=dict)
    # Ledger -> settlement account id, where the default (2^126 + ledger) is not wanted.
    settlement_accounts: dict[int, int] = field(default_factory=dict)
    # Account code given to settlement accounts created on first need, and transfer code of
    # settlement transfers (user-defined categories; must not be 0).
    settlement_account_code: int = 0xFFFF
    settlement_transfer_code: int = 0xFFFF
    # Distance between consecutive timestamps a decision assigns. Processors leave the low bits
    # of every timestamp to a lane (docs/PIPELINE.md, "Time"), so they step by 64.
    timestamp_step: int = 1
    # With the state split among this many partitions, a generated settlement transfer id is
    # chosen in the partition of the account it settles, so it needs no other owner.
    partitions: int = 1

    def asset(self, ledger: int) -> Asset:
        return self.assets.get(ledger, DEFAULT_ASSET)

    def settlement_account(self, ledger: int) -> int:
        return self.settlement_accounts.get(ledger, SETTLEMENT_ACCOUNT_BASE + ledger)
