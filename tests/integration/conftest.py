"""The in-process services of a test module, built from that module's `settings`
fixture (a module may define its own `service` instead), and an HTTP client on the
intake API holding an admin key (tests of narrower roles issue their own with
`tests.keys.bearer`)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from services.dispatch.wiring import Dispatch, dispatch
from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.settings import Settings
from tests.keys import bearer


@pytest.fixture
def service(settings: Settings, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(settings, clock=clock)
    yield parts
    parts.close()


@pytest.fixture
def dispatching(service: Intake, settings: Settings, clock: FakeClock) -> Iterator[Dispatch]:
    """Dispatch beside intake, on the same store (so the same keys) and clock, the roster and stock files loaded."""
    parts = dispatch(settings, clock=clock)
    yield parts
    parts.close()


@pytest.fixture
async def api(service: Intake) -> AsyncIterator[httpx.AsyncClient]:
    headers = bearer(service.gate.keyring, "admin", "ops")
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake", headers=headers) as client:
        yield client
