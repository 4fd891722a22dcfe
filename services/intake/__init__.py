"""The public HTTP API: open tickets, run ticket commands, read state and history."""
