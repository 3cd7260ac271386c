"""The FoundryOps HTTP API: raw ASGI routes, one module per area."""
