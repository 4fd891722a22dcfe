"""Keeps the read models (the ticket list) up to date from the event store."""
