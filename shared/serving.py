"""How the two HTTP services (intake, dispatch) serve their API with uvicorn."""
from __future__ import annotations

from typing import Any

from shared.settings import Settings


def server_options(settings: Settings, port: int) -> dict[str, Any]:
    """uvicorn's options (for `uvicorn.run` or `uvicorn.Config`) for an API on `port`."""
    return {"host": settings.http_host, "port": port, "log_level": "warning",
            "timeout_keep_alive": settings.http_keep_alive}
