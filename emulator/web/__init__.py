"""Web plumbing: app assembly, raw ASGI routes, control routes, OpenAPI, the request log and
body helpers. Knows services only through the registry and the contract.
"""
