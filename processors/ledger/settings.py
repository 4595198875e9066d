"""Validation of the account-settings extensions (SPEC §3): policies, limits, settlement, link.

Pure functions returning the first invalid field's code (names shared by account creation and
update_settings), in this precedence: policy, min_balance, max_balance, settle_threshold,
settle_to, link_type, metadata.
"""

from __future__ import annotations

from schemas import U128_MAX, AccountFlags, AccountSettings, Policy

__all__ = [
    "INVALID_LINK_TYPE",
    "INVALID_MAX_BALANCE",
    "INVALID_METADATA",
    "INVALID_MIN_BALANCE",
    "INVALID_POLICY",
    "INVALID_SETTLE_THRESHOLD",
    "INVALID_SETTLE_TO",
    "LINK_TYPE_LENGTH_MAX",
    "METADATA_ENTRIES_MAX",
    "METADATA_KEY_LENGTH_MAX",
    "METADATA_VALUE_LENGTH_MAX",
    "preset_min_balance",
    "validate_settings",
]

# Shared numeric codes (CreateAccountStatus and AccountCommandStatus use the same values).
INVALID_POLICY = 101
INVALID_MIN_BALANCE = 102
INVALID_MAX_BALANCE = 103
INVALID_SETTLE_THRESHOLD = 104
INVALID_SETTLE_TO = 105
INVALID_LINK_TYPE = 106
INVALID_METADATA = 107

LINK_TYPE_LENGTH_MAX = 64
METADATA_ENTRIES_MAX = 64
METADATA_KEY_LENGTH_MAX = 128
METADATA_VALUE_LENGTH_MAX = 1024

_UNBOUNDED_POLICIES = (Policy.UNCAPPED_OVERDRAFT, Policy.SYSTEM, Policy.EXTERNAL)


def preset_min_balance(policy: Policy | None, declared: int | None) -> int | None:
    """The min_balance a policy implies when the command does not state one."""
    if policy is Policy.NO_OVERDRAFT:
        return 0
    if policy in _UNBOUNDED_POLICIES:
        return None
    return declared  # capped_overdraft: the floor must come from min_balance itself


def _signed_u128(value: int | None) -> bool:
    return value is None or -U128_MAX <= value <= U128_MAX


def validate_settings(settings: AccountSettings, flags: int) -> int:
    """0 when valid, else the code of the first invalid field."""
    policy = settings.policy
    min_balance = settings.min_balance
    max_balance = settings.max_balance
    debits_limited = bool(flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    credits_limited = bool(flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)

    if policy is not None and not isinstance(policy, Policy):
        return INVALID_POLICY
    # The TigerBeetle flag already says "min_balance = 0"; an unbounded policy contradicts it.
    if debits_limited and policy is not None and policy is not Policy.NO_OVERDRAFT:
        return INVALID_POLICY

    if not _signed_u128(min_balance):
        return INVALID_MIN_BALANCE
    if debits_limited and min_balance not in (None, 0):
        return INVALID_MIN_BALANCE
    if policy is Policy.NO_OVERDRAFT and min_balance != 0:
        return INVALID_MIN_BALANCE
    if policy is Policy.CAPPED_OVERDRAFT and (min_balance is None or min_balance > 0):
        return INVALID_MIN_BALANCE
    if policy in _UNBOUNDED_POLICIES and min_balance is not None:
        return INVALID_MIN_BALANCE

    if not _signed_u128(max_balance):
        return INVALID_MAX_BALANCE
    if credits_limited and max_balance not in (None, 0):
        return INVALID_MAX_BALANCE
    min_limit = 0 if debits_limited else min_balance
    max_limit = 0 if credits_limited else max_balance
    if min_limit is not None and max_limit is not None and min_limit > max_limit:
        return INVALID_MAX_BALANCE

    threshold = settings.settle_threshold
    settle_to = settings.settle_to
    if not _signed_u128(threshold) or (threshold is None and settle_to is not None):
        return INVALID_SETTLE_THRESHOLD
    if threshold is not None and max_limit is not None and threshold > max_limit:
        return INVALID_SETTLE_THRESHOLD
    if not _signed_u128(settle_to) or (settle_to is None and threshold is not None):
        return INVALID_SETTLE_TO
    if settle_to is not None and threshold is not None:
        if settle_to > threshold:
            return INVALID_SETTLE_TO
        if min_limit is not None and settle_to < min_limit:
            return INVALID_SETTLE_TO

    link_type = settings.link_type
    if link_type is not None and (
        not isinstance(link_type, str)
        or not 0 < len(link_type) <= LINK_TYPE_LENGTH_MAX
        or not link_type.isascii()
        or not link_type.isprintable()
        or " " in link_type
    ):
        return INVALID_LINK_TYPE

    metadata = settings.metadata
    if not isinstance(metadata, dict) or len(metadata) > METADATA_ENTRIES_MAX:
        return INVALID_METADATA
    for key, value in metadata.items():
        if not isinstance(key, str) or not 0 < len(key) <= METADATA_KEY_LENGTH_MAX:
            return INVALID_METADATA
        if not isinstance(value, str) or len(value) > METADATA_VALUE_LENGTH_MAX:
            return INVALID_METADATA
    return 0
