"""Command line: ``python -m airflow_fireworks.emulator --host H --port P [--setting value ...]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web

from airflow_fireworks.emulator.app import build_app
from airflow_fireworks.emulator.settings import Settings, add_arguments, settings_from_args

SHUTDOWN_TIMEOUT_S = 0.5


def parse_args(argv: list[str] | None = None) -> tuple[str, int, bool, Settings]:
    """Host, port, access-log flag and validated settings from the command line."""
    parser = argparse.ArgumentParser(
        prog="fireworks-emulator", description="Serve a local Fireworks emulator (see docs/emulator.md)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (default: 8765; 0 picks a free one)")
    parser.add_argument("--access-log", action="store_true", help="log every request (slow; off by default)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.host, args.port, args.access_log, settings_from_args(parser, args)


async def serve(host: str, port: int, settings: Settings, access_log: bool = False) -> None:
    """Serve until SIGINT or SIGTERM."""
    runner = web.AppRunner(
        build_app(settings),
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound_port = runner.addresses[0][1] if runner.addresses else port
    print(f"Fireworks emulator listening on http://{host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``fireworks-emulator``."""
    host, port, access_log, settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO if access_log else logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, settings, access_log))


if __name__ == "__main__":
    main()
