"""Stored events read back by orjson are what eventsourcing's own JSON reader makes of
the same bytes, whatever the state holds."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO, DecimalAsStr, JSONTranscoder, TranscodingNotRegisteredError, UUIDAsHex,
)
from hypothesis import given
from hypothesis import strategies as st

from shared.stored_json import StoredJSON

TRANSCODINGS = (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr())


def transcoder(kind: type[JSONTranscoder]) -> JSONTranscoder:
    made = kind()
    for transcoding in TRANSCODINGS:
        made.register(transcoding)
    return made


standard, ours = transcoder(JSONTranscoder), transcoder(StoredJSON)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(),
    st.uuids(), st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(timezone.utc)),
)
states = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["_type_", "_data_", "at", "who", "text"]) | st.text(max_size=5), inner, max_size=4))


def read(reader: JSONTranscoder, stored: bytes) -> tuple[str, Any]:
    try:
        return "read", reader.decode(stored)
    except TypeError:  # TranscodingNotRegisteredError is one: an object naming no known type
        return "refused", None


@given(st.dictionaries(st.text(max_size=8), states, max_size=6))
def test_any_state_reads_back_as_the_standard_reader_reads_it(state: dict[str, Any]) -> None:
    stored = standard.encode(state)
    assert read(ours, stored) == read(standard, stored)


def test_typed_values_nested_in_lists_and_objects_come_back_typed() -> None:
    at = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    engineer = UUID("6f1c1a52-2a51-4b45-9d8e-0a4e3f3b9c10")
    state = {"timestamp": at, "visits": [{"by": engineer, "at": at + timedelta(hours=2)}], "cost": Decimal("12.50")}
    decoded = ours.decode(standard.encode(state))
    assert decoded == state
    assert type(decoded["visits"][0]["by"]) is UUID


def test_objects_that_only_look_typed_stay_objects() -> None:
    stored = b'{"a": {"_type_": "uuid_hex", "_data_": "x", "more": 1}, "b": {"_type_": "uuid_hex"}}'
    assert ours.decode(stored) == standard.decode(stored) == {
        "a": {"_type_": "uuid_hex", "_data_": "x", "more": 1}, "b": {"_type_": "uuid_hex"}}


def test_what_orjson_refuses_or_reads_inexactly_is_read_by_the_standard_reader() -> None:
    assert ours.decode(standard.encode({"reading": float("nan")}))["reading"] != 0  # NaN, which orjson refuses
    beyond_64_bits = {"serial": 2**70 + 1, "below": -(2**63) - 1, "in": [{"deep": 10**30 + 7}]}
    assert ours.decode(standard.encode(beyond_64_bits)) == beyond_64_bits  # orjson makes floats of these


def test_an_unknown_type_is_refused_as_the_standard_reader_refuses_it() -> None:
    stored = b'{"at": {"_type_": "moon_phase", "_data_": "full"}}'
    for reader in (standard, ours):
        with pytest.raises(TranscodingNotRegisteredError, match="moon_phase"):
            reader.decode(stored)


def test_ordinary_floats_are_read_by_orjson_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SLA commitment holds hours as floats: reading every one twice was a rebuild's
    largest waste."""
    reader = transcoder(StoredJSON)
    monkeypatch.setattr(reader, "decoder", None)  # the standard library's parser, gone
    state = {"targets": [{"hours": 0.5}, {"hours": 2.0}], "ratio": -1e18}
    assert reader.decode(standard.encode(state)) == state
