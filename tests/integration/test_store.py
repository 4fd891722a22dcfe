"""Opening the store: processes starting together on a fresh database (make run,
make bench's loaders, several replicas) all get a working store."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from shared.store import open_store


def test_many_starting_at_once_on_a_fresh_database_all_open_it(database_url: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        stores = list(pool.map(lambda _: open_store(database_url), range(8)))
    try:
        assert all(store.recorder.max_notification_id() in (None, 0) for store in stores)
    finally:
        for store in stores:
            store.close()
