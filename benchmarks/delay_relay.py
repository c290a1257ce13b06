"""A TCP relay that delays every byte by a fixed time each way: a slow link where netem is missing.

    python benchmarks/delay_relay.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT ONE_WAY_MS

Each connection accepted on LISTEN_HOST:LISTEN_PORT is joined to a new
connection to TARGET_HOST:TARGET_PORT; what one side sends reaches the
other ONE_WAY_MS later, in order, so a call and its reply take twice that
on top of the real link. It prints ``listening`` once it accepts
connections and runs until killed (SIGTERM). Used by
benchmarks/delayed_link.py and tests/test_delayed_link.py when the kernel
has no ``netem`` queueing discipline (``tc qdisc ... netem delay``).
"""

import asyncio
import signal
import socket
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` s after it came; close at the end."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            try:
                data = await reader.read(1 << 16)
            except (ConnectionError, OSError):
                data = b""
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()
        writer.close()


async def _join(client_reader, client_writer, target, delay) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    except asyncio.CancelledError:   # the relay stops
        client_writer.close()
        return
    for writer in (client_writer, server_writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(_pump(client_reader, server_writer, delay),
                             _pump(server_reader, client_writer, delay), return_exceptions=True)
    except asyncio.CancelledError:   # the relay stops: end quietly (asyncio would print the cancellation)
        client_writer.close()
        server_writer.close()


async def relay(listen_host: str, listen_port: int, target_host: str, target_port: int,
                one_way_seconds: float) -> None:
    """Serve until cancelled."""
    server = await asyncio.start_server(
        lambda r, w: _join(r, w, (target_host, target_port), one_way_seconds), listen_host, listen_port,
        reuse_address=True)
    print("listening", flush=True)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with server:
        await stop


def main() -> None:
    listen_host, listen_port, target_host, target_port, one_way_ms = sys.argv[1:6]
    asyncio.run(relay(listen_host, int(listen_port), target_host, int(target_port), float(one_way_ms) / 1000))


if __name__ == "__main__":
    main()
