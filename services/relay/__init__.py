"""The relay: publishes the store's notification log to JetStream, in order, nothing lost.

Run it as its own process with `python -m services.relay`; `worker.Relay` does the work.
"""
