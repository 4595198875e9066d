"""The Python client of the ledger (SPEC §5): publishes command batches to Kafka and waits for
their results.

    with LedgerClient() as client:          # LEDGER_KAFKA_BOOTSTRAP, LEDGER_TOPIC_PREFIX
        results = client.create_transfers([Transfer(id=..., ...)])
        handle = client.submit(batch)       # pipelining: many requests in flight

Each request is one CommandBatch on `<prefix>commands` (partition `home_partition`, key the
16-byte home id); the processors answer with one ResultBatch on the client's own
`<prefix>results` partition, which the client reads read_committed.
"""

from producers._client import AsyncLedgerClient, LedgerClient
from producers._core import DEFAULT_BOOTSTRAP, ENV_BOOTSTRAP, RequestHandle
from producers._errors import (
    ClientClosed,
    DeliveryFailed,
    LedgerClientError,
    LedgerUnavailable,
    OutcomeUnknown,
    ProduceError,
    ProtocolError,
    RequestRejected,
)
from producers._requests import AccountCommandResult, CreateResult

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "ENV_BOOTSTRAP",
    "AccountCommandResult",
    "AsyncLedgerClient",
    "ClientClosed",
    "CreateResult",
    "DeliveryFailed",
    "LedgerClient",
    "LedgerClientError",
    "LedgerUnavailable",
    "OutcomeUnknown",
    "ProduceError",
    "ProtocolError",
    "RequestHandle",
    "RequestRejected",
]
