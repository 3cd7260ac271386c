"""HTTP transport: the listeners, the emulator's own HTTP/1.1 and HTTP/2 servers, TLS and the
Hypercorn mode. Knows ASGI, never a service.
"""
