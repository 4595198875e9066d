"""Fuzzing the HTTP API (SPEC §5, §7; issue 5): malformed JSON bodies, path ids and query
parameters for every endpoint, against a real projection worker serving the API over a real
processor on the real broker.

Each malformed request changes one thing of a well-formed one: a value of the wrong type, a
number beyond its width or negative, an unknown flag, policy or field, a repeated or unknown
query parameter; or the body is not JSON at all, nested too deep, or too long. Every one must
get a 4xx (never a 5xx) whose JSON names the field the change was made to (the path of the
value, e.g. `[1].amount`, `ids[0]`, `limit`); and none may reach the ledger: the commands
topic's end offsets and what the API reads are the same before and after.

Size: `LEDGER_FUZZ_HTTP_EXAMPLES` requests per endpoint group (default 300; 8 groups plus ~20
fixed cases: about 2,400 requests in CI, ~20 s). The long run (docs/BAD_INPUT.md) sets it to
10000: about 80,000 requests, ~6 min.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.supervisor import Supervisor
from projections.api import BODY_MAX_BYTES
from schemas import BATCH_EVENTS_MAX
from schemas.topics import Topics
from tests.pipeline.harness import free_port, http_stack

pytestmark = pytest.mark.kafka

PARTITIONS = 2
EXAMPLES = int(os.environ.get("LEDGER_FUZZ_HTTP_EXAMPLES", "300"))
ACCOUNTS = (1, 2, 3)

# What each request field is, by SPEC §3-§5 (an oracle of its own, not the codec's tables).
U128, U64, U32, U16 = 128, 64, 32, 16
ACCOUNT_FIELDS: dict[str, Any] = {
    "id": U128, "debits_pending": U128, "debits_posted": U128, "credits_pending": U128,
    "credits_posted": U128, "user_data_128": U128, "user_data_64": U64, "user_data_32": U32,
    "reserved": U32, "ledger": U32, "code": U16, "timestamp": U64, "flags": "account_flags",
    "policy": "policy", "min_balance": "signed", "max_balance": "signed",
    "settle_threshold": "signed", "settle_to": "signed", "link_type": "string",
    "metadata": "metadata",
}  # fmt: skip
TRANSFER_FIELDS: dict[str, Any] = {
    "id": U128, "debit_account_id": U128, "credit_account_id": U128, "amount": U128,
    "pending_id": U128, "user_data_128": U128, "user_data_64": U64, "user_data_32": U32,
    "timeout": U32, "ledger": U32, "code": U16, "timestamp": U64,
    "debit_account_version": U64, "credit_account_version": U64, "flags": "transfer_flags",
}  # fmt: skip
QUERY_FIELDS: dict[str, Any] = {
    "user_data_128": U128, "user_data_64": U64, "user_data_32": U32, "ledger": U32,
    "code": U16, "timestamp_min": U64, "timestamp_max": U64, "limit": "limit",
    "reversed": "bool", "flags": "query_flags",
}  # fmt: skip
SETTINGS_FIELDS: dict[str, Any] = {
    "expected_version": U64, "policy": "policy", "min_balance": "signed",
    "max_balance": "signed", "settle_threshold": "signed", "settle_to": "signed",
    "link_type": "string", "metadata": "metadata",
}  # fmt: skip
FILTER_PARAMS: dict[str, Any] = {
    "debits": "bool", "credits": "bool", "limit": "limit", "reversed": "bool",
    "user_data_128": U128, "user_data_64": U64, "user_data_32": U32, "code": U16,
    "timestamp_min": U64, "timestamp_max": U64,
}  # fmt: skip


def _bad_json_values(kind: Any) -> st.SearchStrategy[Any]:
    """JSON values a field of `kind` must refuse (null is "absent" for most: not here)."""
    wrong_types = st.sampled_from([1.5, True, False, [], {}, [1], {"a": 1}, 1e3, _DEEP])
    if isinstance(kind, int):
        return st.one_of(
            wrong_types,
            st.integers(max_value=-1),
            st.integers(min_value=1 << kind, max_value=1 << (kind + 64)),
            st.sampled_from(["", "abc", "-1", "1.5", "0x10", " 7", "+7", "1" * 41, "1e3"]),
            st.integers(min_value=1 << kind, max_value=1 << 200).map(str),
        )
    if kind == "signed":
        big = st.integers(min_value=1 << 128, max_value=1 << 200)
        return st.one_of(
            wrong_types.filter(lambda v: v is not None),
            big,
            big.map(lambda v: -v),
            st.sampled_from(["", "abc", "--1", "+5", "1.5", "1" * 41]),
        )
    if kind in ("account_flags", "transfer_flags", "query_flags"):
        return st.one_of(
            st.sampled_from([1.5, True, {}, {"linked": True}, -1, 1 << 16, "abc", "-1"]),
            st.lists(st.sampled_from(["unknown", "LINKED", "", 1, None, []]), min_size=1),
        )
    if kind == "limit":
        return st.one_of(
            wrong_types,
            st.integers(max_value=-1),
            st.integers(min_value=BATCH_EVENTS_MAX + 1),
            st.sampled_from(["abc", "-1", str(BATCH_EVENTS_MAX + 1)]),
        )
    if kind == "bool":
        return st.sampled_from([1, 0, "true", "false", [], {}, 1.5])
    if kind == "policy":
        return st.one_of(st.text(max_size=10).filter(lambda t: t not in _POLICIES), st.just(1))
    if kind == "string":
        return st.sampled_from([1, True, [], {}, 1.5, "\ud800", "a\udfff"])
    assert kind == "metadata"
    return st.sampled_from(
        ["x", 1, [], [["k", "v"]], {"k": 1}, {"k": None}, {"k": ["v"]}, {"k": "\ud800"},
         {"\udc00": "v"}]
    )  # fmt: skip


_DEEP: Any = []
for _ in range(500):  # nested deep, yet within what the JSON parser takes
    _DEEP = [_DEEP]
_POLICIES = {"no_overdraft", "capped_overdraft", "uncapped_overdraft", "system", "external"}


def _bad_params(kind: Any) -> st.SearchStrategy[str]:
    """Query parameter values a parameter of `kind` must refuse."""
    if kind == "bool":
        return st.sampled_from(["", "yes", "2", "on", "t"])
    if kind == "limit":
        return st.sampled_from(["", "-1", "abc", str(BATCH_EVENTS_MAX + 1), str(1 << 40)])
    assert isinstance(kind, int)
    return st.one_of(
        st.sampled_from(["", "-1", "abc", "1.5", "0x10", " 7", "1" * 41]),
        st.integers(min_value=1 << kind, max_value=1 << 200).map(str),
    )


# Any text, lone surrogates too (JSON escapes them); query names are URL-encoded as UTF-8.
_unknown_names = st.text(min_size=1, max_size=12)
_param_names = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12)


@dataclass(frozen=True)
class Bad:
    """A malformed request and the field its answer must name (None: the body as a whole;
    "*": any, e.g. a route that does not exist)."""

    method: str
    path: str
    body: bytes | None
    field: str | None

    def describe(self) -> str:
        return f"{self.method} {self.path} {self.body[:200]!r}" if self.body else self.path


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _good_account(i: int) -> dict[str, Any]:
    return {"id": str(10_000 + i), "ledger": 1, "code": 1}


def _good_transfer(i: int) -> dict[str, Any]:
    return {"id": str(20_000 + i), "debit_account_id": 1, "credit_account_id": 2, "amount": "1",
            "ledger": 1, "code": 1}  # fmt: skip


@st.composite
def _bad_object(
    draw: st.DrawFn, good: dict[str, Any], fields: dict[str, Any], path: str
) -> tuple[dict[str, Any], str]:
    """`good` with one field given a bad value, or an unknown field added; (object, path)."""
    obj = dict(good)
    if draw(st.integers(0, 4)) == 0:
        name = draw(_unknown_names.filter(lambda n: n not in fields))
        obj[name] = draw(st.one_of(st.integers(), st.text(max_size=5)))
    else:
        name = draw(st.sampled_from(sorted(fields)))
        obj[name] = draw(_bad_json_values(fields[name]))
    return obj, f"{path}.{name}" if path else name


@st.composite
def _create_requests(draw: st.DrawFn) -> Bad:
    """POST /accounts and /transfers: one event of a batch made bad."""
    accounts = draw(st.booleans())
    good, fields = (
        (_good_account, ACCOUNT_FIELDS) if accounts else (_good_transfer, TRANSFER_FIELDS)
    )
    size = draw(st.integers(1, 4))
    bad_at = draw(st.integers(0, size - 1))
    obj, field = draw(_bad_object(good(bad_at), fields, f"[{bad_at}]"))
    batch = [obj if i == bad_at else good(i) for i in range(size)]
    return Bad("POST", "/accounts" if accounts else "/transfers", _json(batch), field)


@st.composite
def _lookup_requests(draw: st.DrawFn) -> Bad:
    path = draw(st.sampled_from(["/accounts/lookup", "/transfers/lookup"]))
    ids: list[Any] = ["1", 2, "3"]
    what = draw(st.sampled_from(["id", "ids", "unknown field"]))
    if what == "id":
        at = draw(st.integers(0, len(ids) - 1))
        ids[at] = draw(_bad_json_values(U128))
        return Bad("POST", path, _json({"ids": ids}), f"ids[{at}]")
    if what == "ids":
        value: Any = draw(st.sampled_from(["1", 1, {}, None, True]))
        return Bad("POST", path, _json({"ids": value}), "ids")
    name = draw(_unknown_names.filter(lambda n: n != "ids"))
    return Bad("POST", path, _json({"ids": ids, name: 1}), name)


@st.composite
def _query_requests(draw: st.DrawFn) -> Bad:
    path = draw(st.sampled_from(["/accounts/query", "/transfers/query"]))
    obj, field = draw(_bad_object({"ledger": 1, "limit": 10}, QUERY_FIELDS, ""))
    return Bad("POST", path, _json(obj), field)


@st.composite
def _command_requests(draw: st.DrawFn) -> Bad:
    """freeze / unfreeze / close, and the settings patch."""
    account = draw(st.sampled_from(ACCOUNTS))
    if draw(st.booleans()):
        action = draw(st.sampled_from(["freeze", "unfreeze", "close"]))
        fields = {"expected_version": U64}
        obj, field = draw(_bad_object({"expected_version": 1}, fields, ""))
        return Bad("POST", f"/accounts/{account}/{action}", _json(obj), field)
    obj, field = draw(_bad_object({"link_type": "http"}, SETTINGS_FIELDS, ""))
    return Bad("PATCH", f"/accounts/{account}/settings", _json(obj), field)


_ROUTES = [
    ("GET", "/accounts/{}"), ("GET", "/accounts/{}/transfers"), ("GET", "/accounts/{}/balances"),
    ("GET", "/accounts/{}/versions"), ("GET", "/accounts/{}/settlements"),
    ("POST", "/accounts/{}/freeze"), ("POST", "/accounts/{}/unfreeze"),
    ("POST", "/accounts/{}/close"), ("PATCH", "/accounts/{}/settings"),
]  # fmt: skip


@st.composite
def _path_ids(draw: st.DrawFn) -> Bad:
    """Every route with an id: the id is no u128."""
    method, route = draw(st.sampled_from(_ROUTES))
    raw = draw(_bad_params(U128).filter(bool))
    path = route.format(quote(raw, safe=""))
    return Bad(method, path, b"{}" if method != "GET" else None, "id")


@st.composite
def _query_params(draw: st.DrawFn) -> Bad:
    """GET filters: a bad value, an unknown or repeated parameter."""
    route = draw(st.sampled_from(["/accounts/1/transfers", "/accounts/1/balances", "/accounts/1"]))
    # (as_of_offset is a non-negative i64; hypothesis draws names from this file's strings
    # too, so a name the route takes must be listed here or it is "unknown".)
    params = {"as_of": U64, "as_of_offset": 63} if route == "/accounts/1" else FILTER_PARAMS
    what = draw(st.sampled_from(["value", "unknown", "repeated"]))
    name = draw(st.sampled_from(sorted(params)))
    if what == "value":
        pairs = [(name, draw(_bad_params(params[name])))]
    elif what == "unknown":
        name = draw(_param_names.filter(lambda n: n not in params))
        pairs = [(name, "1")]
    else:
        pairs = [(name, "1" if params[name] != "bool" else "true")] * 2
    return Bad("GET", f"{route}?{urlencode(pairs)}", None, name)


@st.composite
def _stray_params(draw: st.DrawFn) -> Bad:
    """Routes that take no query parameters, given one."""
    method, route = draw(
        st.sampled_from(
            [
                ("POST", "/accounts"), ("POST", "/transfers"), ("POST", "/accounts/lookup"),
                ("POST", "/accounts/query"), ("GET", "/accounts/1/versions"),
                ("GET", "/accounts/1/settlements"), ("POST", "/accounts/1/freeze"),
                ("PATCH", "/accounts/1/settings"),
            ]
        )
    )  # fmt: skip
    name = draw(_param_names)
    body = None if method == "GET" else b"[]" if route in ("/accounts", "/transfers") else b"{}"
    return Bad(method, f"{route}?{urlencode([(name, 'x')])}", body, name)


_BODY_ROUTES = [
    ("POST", "/accounts"), ("POST", "/transfers"), ("POST", "/accounts/lookup"),
    ("POST", "/transfers/lookup"), ("POST", "/accounts/query"), ("POST", "/transfers/query"),
    ("POST", "/accounts/1/freeze"), ("POST", "/accounts/1/unfreeze"),
    ("POST", "/accounts/1/close"), ("PATCH", "/accounts/1/settings"), ("POST", "/admin/clock"),
]  # fmt: skip
_NOT_JSON = [
    b"{", b"[1,", b"NaN", b"[NaN]", b"[Infinity]", b"\xff\xfe", b"{'a': 1}", b'{"a": 1}{}',
    b"[" * 100_000 + b"]" * 100_000, b"1" * 5000, b"[1]]", b'{"a" 1}', b"\x00",
]  # fmt: skip


@st.composite
def _bodies(draw: st.DrawFn) -> Bad:
    """Bodies that are not JSON, or JSON of the wrong shape, for every route with a body."""
    method, path = draw(st.sampled_from(_BODY_ROUTES))
    body = draw(
        st.one_of(
            st.sampled_from(_NOT_JSON),
            st.binary(min_size=1, max_size=64).filter(_not_json),
            st.sampled_from([b"1", b'"x"', b"true", b"[[]]", b"[1]", b'[{"a": [[[]]]}]']),
        )
    )
    wrong_shape = path in ("/accounts", "/transfers") and body in (b"[[]]", b"[1]")
    return Bad(method, path, body, "[0]" if wrong_shape else "*")


def _not_json(raw: bytes) -> bool:
    """Not JSON, and not blank either (a blank body is an absent one, e.g. the query's)."""
    try:
        if not raw.decode().strip():
            return False
    except UnicodeDecodeError:
        return True
    try:
        json.loads(raw)
    except ValueError:
        return True
    return False


@st.composite
def _clock_requests(draw: st.DrawFn) -> Bad:
    name = draw(st.sampled_from(["advance_ns", "to_ns"]))
    value = draw(_bad_json_values(U64 if name == "advance_ns" else 63))
    return Bad("POST", "/admin/clock", _json({name: value}), name)


_INTERNAL_OPS = ["lookup_accounts", "account_transfers", "query_accounts", "balances_at"]
_INTERNAL_BODIES: list[Any] = [
    {"args": {}, "partitions": [0]},
    {"args": {"ids": "x"}, "partitions": [0]},
    {"args": {"filter": {"nope": 1}}, "partitions": [0, 1]},
    {"args": {"account_id": "x", "timestamp": None}, "partitions": [0]},
    {"args": [], "partitions": [0]},
    {"args": {}, "partitions": []},
    {"args": {}, "partitions": ["x"]},
    {"partitions": [0]},
    [],
]


@st.composite
def _internal_reads(draw: st.DrawFn) -> Bad:
    """The workers' internal endpoint, served on the same port: bad arguments."""
    op = draw(st.sampled_from(_INTERNAL_OPS))
    body = draw(st.one_of(st.sampled_from(_INTERNAL_BODIES), st.binary(max_size=16)))
    raw = body if isinstance(body, bytes) else _json(body)
    return Bad("POST", f"/internal/projections/{op}", raw, "*")


class Http:
    """A keep-alive HTTP/1.1 connection, reopened when the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(self, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                raw = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close()
                return response.status, json.loads(raw) if raw else None
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@dataclass
class Api:
    http: Http
    bootstrap: str
    topics: Topics
    supervisor: Supervisor


@pytest.fixture
def api(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Api]:
    port = free_port()
    # Clock control is on, so POST /admin/clock exists: it is fuzzed too.
    with http_stack(kafka_bootstrap, topic_prefix, PARTITIONS, tmp_path, port, "h") as stack:
        yield Api(Http(port), kafka_bootstrap, Topics(topic_prefix), stack)


def _commands_end(api: Api) -> list[int]:
    consumer = Consumer({"bootstrap.servers": api.bootstrap, "group.id": "fuzz-http-offsets"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(api.topics.commands, p), timeout=10)[1]
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def _snapshot(api: Api) -> list[Any]:
    """What the API reads of the ledger's accounts and transfers."""
    reads = [api.http.send("GET", f"/accounts/{a}", None) for a in ACCOUNTS]
    reads.append(api.http.send("POST", "/transfers/lookup", _json({"ids": [100, 101]})))
    reads.append(api.http.send("POST", "/accounts/query", _json({"ledger": 1})))
    assert all(status == 200 for status, _ in reads), reads
    return [body for _, body in reads]


def _check(api: Api, bad: Bad) -> None:
    status, body = api.http.send(bad.method, bad.path, bad.body)
    assert 400 <= status < 500, (status, body, bad.describe())
    assert isinstance(body, dict) and body.get("error"), (status, body, bad.describe())
    if bad.field != "*":
        named = body.get("field")
        if bad.field is None:
            assert named is None, (body, bad.describe())
        else:
            assert isinstance(named, str) and named.startswith(bad.field), (body, bad.describe())


def test_malformed_http_requests_get_4xx_naming_the_field_and_change_nothing(api: Api) -> None:
    http_ = api.http
    status, created = http_.send(
        "POST", "/accounts", _json([{"id": a, "ledger": 1, "code": 1} for a in ACCOUNTS])
    )
    assert status == 200 and {r["status"] for r in created} == {"created"}, created
    transfers = [
        {"id": 100, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "ledger": 1,
         "code": 1},
        {"id": 101, "debit_account_id": 2, "credit_account_id": 3, "amount": 7, "ledger": 1,
         "code": 1, "flags": ["pending"]},
    ]  # fmt: skip
    status, results = http_.send("POST", "/transfers", _json(transfers))
    assert status == 200 and {r["status"] for r in results} == {"created"}, results
    # Well-formed requests with invalid contents are not malformed: 200 and result codes.
    status, results = http_.send(
        "POST", "/accounts", _json([{"id": 0, "ledger": 1, "code": 1}, {"id": 9, "code": 1}])
    )
    assert status == 200, results
    assert [r["status"] for r in results] == ["id_must_not_be_zero", "ledger_must_not_be_zero"]

    before, offsets = _snapshot(api), _commands_end(api)

    # The fixed cases: too many events or ids, a body over the size limit, unknown routes.
    too_many = BATCH_EVENTS_MAX + 1
    fixed = [
        Bad("POST", "/accounts", _json([{}] * too_many), None),
        Bad("POST", "/transfers", _json([{}] * too_many), None),
        Bad("POST", "/accounts/lookup", _json({"ids": [1] * too_many}), "ids"),
        Bad("POST", "/transfers", b"[" + b" " * (BODY_MAX_BYTES + 1) + b"]", None),
        Bad("GET", "/nowhere", None, None),
        Bad("GET", "/accounts/1/transfers?%ff=1", None, "*"),  # not UTF-8
        Bad("GET", "/accounts/1/transfers?limit=%ff", None, "limit"),
        Bad("GET", "/accounts/%ff", None, "id"),
        # Names the answer repeats, that UTF-8 cannot carry (JSON escapes lone surrogates).
        Bad("POST", "/accounts", b'[{"id": 1, "\\ud800": 1}]', "[0]."),
        Bad("POST", "/accounts/query", b'{"\\udfff": 1}', "*"),
        Bad("POST", "/accounts", b'[{"id": 5, "metadata": {"k": "\\ud800"}}]', "[0].metadata"),
        Bad("POST", "/accounts", b'[{"id": 5, "metadata": {"\\ud800": "v"}}]', "[0].metadata"),
        Bad("POST", "/accounts", b'[{"id": 5, "link_type": "\\udc00"}]', "[0].link_type"),
        Bad("PATCH", "/accounts/1/settings", b'{"link_type": "a\\ud800"}', "link_type"),
        Bad("GET", "/accounts/1/transfers?%ed%a0%80=1", None, "*"),
        Bad("DELETE", "/accounts/1", None, None),
    ]
    for bad in fixed:
        _check(api, bad)

    groups = [
        _create_requests(), _lookup_requests(), _query_requests(), _command_requests(),
        st.one_of(_path_ids(), _query_params(), _stray_params()), _bodies(), _clock_requests(),
        _internal_reads(),
    ]  # fmt: skip
    for group in groups:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(group)
        def fuzz(bad: Bad) -> None:
            _check(api, bad)

        fuzz()

    assert api.supervisor.failed() is None
    assert _commands_end(api) == offsets, "a malformed request reached the ledger"
    assert _snapshot(api) == before


def test_the_internal_read_endpoint_refuses_bad_arguments_with_400(api: Api) -> None:
    # Was: arguments of the wrong shape raised in the query (KeyError, TypeError, ...): a 500.
    for op in _INTERNAL_OPS:
        for body in _INTERNAL_BODIES:
            status, answer = api.http.send("POST", f"/internal/projections/{op}", _json(body))
            assert status == 400, (op, body, status, answer)
            assert answer["error"].startswith("bad internal read: "), answer
    status, answer = api.http.send("POST", "/internal/projections/lookup_accounts", b"[" * 10**5)
    assert status == 400, answer
