"""Code shared by every process: the domain, the event store and bus wiring, settings."""
