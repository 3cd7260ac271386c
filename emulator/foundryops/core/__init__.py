"""The synchronous FoundryOps core: records, state machines and rules.

Imports nothing from trio, quart, hypercorn or yaml; the engine and the API build on it.
"""
