"""How the two HTTP services (intake, dispatch) serve their API with uvicorn."""
from __future__ import annotations

from typing import Any

from shared.settings import Settings


def server_options(settings: Settings, port: int) -> dict[str, Any]:
    """uvicorn's options (for `uvicorn.run` or `uvicorn.Config`) for an API on `port`."""
    return {"host": settings.http_host, "port": port, "log_level": "warning",
            "timeout_keep_alive": settings.http_keep_alive}


def telemetry(enabled: bool) -> dict[str, bool]:
    """FastAPI's native OpenTelemetry options (`FastAPI(telemetry=...)`): all on or all
    off. Off, FastAPI skips its look at the global providers on every request, which
    costs about a sixth of the intake's CPU for opening a ticket."""
    return {"tracing": enabled, "metrics": enabled, "logs": enabled, "operation_spans": enabled}
