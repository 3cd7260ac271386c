"""The synchronous ConnectSoft domain: attrs records and state machines, no I/O.

Nothing under this package imports trio, quart, hypercorn or yaml (tests/connectsoft checks).
Methods take `now` (seconds since the epoch) as an argument, validate before they mutate, and
raise typed domain errors from `errors.py`.
"""
