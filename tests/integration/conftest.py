"""An HTTP client on the in-process intake API of the module's `service` fixture."""
from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from shared.bootstrap import Intake


@pytest.fixture
async def api(service: Intake) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://intake") as client:
        yield client
