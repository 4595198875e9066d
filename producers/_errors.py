"""The exceptions the ledger client raises."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.messages import Operation

__all__ = [
    "ClientClosed",
    "DeliveryFailed",
    "LedgerClientError",
    "LedgerUnavailable",
    "OutcomeUnknown",
    "ProduceError",
    "ProtocolError",
    "RequestRejected",
]

_IDS_SHOWN = 10  # the message lists this many ids; the attribute holds them all


class LedgerClientError(Exception):
    """Base class of every error the ledger client raises on purpose."""


class LedgerUnavailable(LedgerClientError):
    """The ledger's topics are missing or the broker cannot be reached."""


class ClientClosed(LedgerClientError):
    """The client was closed; it sends no more requests."""


class ProduceError(LedgerClientError):
    """The request could not even be queued for Kafka: nothing was sent."""


class ProtocolError(LedgerClientError):
    """The processors answered something the contract does not allow (e.g. a result count
    different from the event count)."""


class RequestRejected(LedgerClientError):
    """The processors refused the whole request (ResultBatch.rejection): no event was applied."""

    def __init__(self, request_id: int, reason: str) -> None:
        super().__init__(f"request {request_id:032x} was rejected: {reason}")
        self.request_id = request_id
        self.reason = reason


class OutcomeUnknown(LedgerClientError):
    """No result arrived for a request, so whether its events were applied is unknown.

    Resubmitting the same events is safe: ids are idempotency keys, so an event that was
    applied comes back as ``exists`` (or, for a transfer that failed, ``id_already_failed``).
    """

    def __init__(
        self,
        request_id: int,
        operation: Operation,
        event_ids: Sequence[int],
        why: str,
    ) -> None:
        self.request_id = request_id
        self.operation = operation
        self.event_ids: tuple[int, ...] = tuple(event_ids)
        self.why = why
        super().__init__(self._describe())

    def _describe(self) -> str:
        shown = ", ".join(str(i) for i in self.event_ids[:_IDS_SHOWN])
        more = len(self.event_ids) - _IDS_SHOWN
        if more > 0:
            shown += f", ... and {more} more"
        if self.operation is Operation.ACCOUNT_COMMAND:
            # Lifecycle commands are not keyed by an event id: only a version pin makes them
            # idempotent.
            retry = (
                "resubmitting is safe only with expected_version set (a repeat then fails with "
                "account_version_mismatch instead of applying twice)"
            )
            what = "account command on account"
        else:
            retry = (
                "resubmitting the same events is safe: ids are idempotency keys, so events "
                "already applied come back as `exists` (or `id_already_failed`)"
            )
            what = "accounts" if self.operation is Operation.CREATE_ACCOUNTS else "transfers"
        return (
            f"outcome unknown for request {self.request_id:032x} "
            f"({len(self.event_ids)} {what} [{shown}]): {self.why}; {retry}"
        )


class DeliveryFailed(OutcomeUnknown):
    """Kafka did not confirm the request was written. It may still have been written (an
    idempotent producer gives up after retries without knowing), hence an OutcomeUnknown."""

    def __init__(
        self,
        request_id: int,
        operation: Operation,
        event_ids: Sequence[int],
        kafka_error: object,
    ) -> None:
        self.kafka_error = kafka_error
        super().__init__(
            request_id, operation, event_ids, f"Kafka did not confirm delivery: {kafka_error}"
        )
