"""The notifier: delivers recorded events to webhook subscribers, signed (Standard
Webhooks 1.0), retried, and never lost. `python -m services.notifier` runs it."""
