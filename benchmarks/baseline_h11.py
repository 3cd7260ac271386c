"""Calibration server: bare h11 on trio, a fixed 12-byte body for any request, keep-alive.

The practical ceiling for a Python HTTP/1.1 server on trio on this machine; every throughput
target of the benchmark suite is a ratio to this server's requests/s in the same run.
Run: `python benchmarks/baseline_h11.py [PORT]`; prints `HTTP:          http://127.0.0.1:PORT`.
"""

from __future__ import annotations

import sys
from functools import partial

import h11
import trio

BODY = b'{"ok": true}'  # 12 bytes
HEADERS = [("content-type", "application/json"), ("content-length", str(len(BODY)))]


async def handle(stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER)
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                connection.receive_data(data)
                if not data:
                    return
            elif isinstance(event, h11.EndOfMessage):
                out = connection.send(h11.Response(status_code=200, headers=HEADERS))
                out += connection.send(h11.Data(data=BODY)) + connection.send(h11.EndOfMessage())
                await stream.send_all(out)
                if connection.our_state is not h11.DONE:
                    return
                connection.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def main(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)
    print(f"HTTP:          http://127.0.0.1:{listeners[0].socket.getsockname()[1]}", flush=True)
    await trio.serve_listeners(partial(handle), listeners)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
