"""How stored events' state is read back: eventsourcing's JSON format, parsed by orjson.

Every read model, worker and replay decodes each event it touches, and the standard
library's parser, calling back into Python for every JSON object, was the largest
single cost of a rebuild (a fifth of it). orjson parses the same bytes about twice as
fast; the objects eventsourcing wrote for its own types (`{"_type_": name, "_data_":
value}`) are then turned back into those types here, innermost first, exactly as the
standard library's object hook would. Writing stays with eventsourcing's encoder:
orjson writes a UUID as a plain string, which would read back as one.
"""
from __future__ import annotations

from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder, TranscodingNotRegisteredError


# orjson reads an integer beyond 64 bits as a float, which is then at least this large.
# Smaller floats are read exactly as the standard library reads them.
_INEXACT_FROM = 2.0**63


class _NotExact(Exception):
    """The parse holds a float so large that it may have been such an integer."""


class StoredJSON(JSONTranscoder):
    def decode(self, data: bytes) -> Any:
        try:
            return self._restored(orjson.loads(data))
        except (orjson.JSONDecodeError, _NotExact):
            # What orjson refuses (NaN) or may have read inexactly: the standard library
            # reads it as it always did.
            return super().decode(data)

    def _restored(self, value: Any) -> Any:
        """`value` with each of eventsourcing's typed objects in it turned back into
        its type, in place (the parse is ours alone)."""
        kind = type(value)
        if kind is dict:
            for key, item in value.items():
                inner = type(item)
                if inner is dict or inner is list or inner is float:
                    value[key] = self._restored(item)
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self._typed(value["_type_"], value["_data_"])
        elif kind is list:
            for index, item in enumerate(value):
                inner = type(item)
                if inner is dict or inner is list or inner is float:
                    value[index] = self._restored(item)
        elif kind is float and not -_INEXACT_FROM < value < _INEXACT_FROM:
            raise _NotExact
        return value

    def _typed(self, name: Any, data: Any) -> Any:
        try:
            transcoding = self.names[name]
        except (KeyError, TypeError):
            raise TranscodingNotRegisteredError(
                f"Data serialized with name {name!r} is not deserializable. "
                "Please register a custom transcoding for this type.") from None
        return transcoding.decode(data)

