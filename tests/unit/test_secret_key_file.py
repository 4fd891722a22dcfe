"""The generated webhook key file: processes starting together all get the same,
complete key (a half-written file once made the notifier exit at start)."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.fernet import Fernet

from shared.webhooks import _key_file


def test_processes_starting_together_share_one_complete_key(tmp_path: Path) -> None:
    with ProcessPoolExecutor(8) as pool:
        keys = set(pool.map(_key_file, [tmp_path / "secret.key"] * 32))
    assert len(keys) == 1
    Fernet(keys.pop())  # a valid key, not an empty or partial one
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no drafts left behind
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
