"""An HTTP client on the in-process intake API of the module's `service` fixture,
holding an admin key (tests of narrower roles issue their own with `tests.keys.bearer`)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from shared.bootstrap import Intake
from tests.keys import bearer


@pytest.fixture
async def api(service: Intake) -> AsyncIterator[httpx.AsyncClient]:
    headers = bearer(service.gate.keyring, "admin", "ops")
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake", headers=headers) as client:
        yield client
