"""Read models built from the event store's notification log, each with its position
saved in the same transaction as its rows (exactly-once)."""
