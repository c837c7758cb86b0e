"""An MCP upstream (official Python SDK, low-level Server) that serves ONE server's tools from
tests/data/tool-corpus.json verbatim: the exact name, description, inputSchema and
annotations of each tool, for end-to-end tests of tool search over a large catalogue.

Usage: corpus_upstream.py SERVER [stdio | streamable-http PORT]
  SERVER is a key of the corpus's "servers" (github, slack, jira, ...). Over HTTP it listens
  on 127.0.0.1:PORT at /mcp.
       corpus_upstream.py all streamable-http PORT
  Every server of the corpus in one process: server S at http://127.0.0.1:PORT/S/mcp (each
  its own MCP server with its own sessions).

Every tools/call answers one text content "<server>.<tool> called with <json args>" (arguments
are not validated against the schema); an unknown tool name is an error result.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from mcp import types
from mcp.server.lowlevel import Server

CORPUS = Path(__file__).resolve().parents[2] / "data" / "tool-corpus.json"


def load_tools(server_name: str) -> list[types.Tool]:
    servers = json.loads(CORPUS.read_text())["servers"]
    if server_name not in servers:
        sys.exit(f"unknown server {server_name!r}; the corpus has: {', '.join(sorted(servers))}")
    return [types.Tool.model_validate(t) for t in servers[server_name]]


def make_server(server_name: str) -> Server:
    tools = load_tools(server_name)
    names = {t.name for t in tools}
    server: Server = Server(f"corpus-{server_name}")

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return tools

    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> list[types.TextContent]:
        if name not in names:
            raise ValueError(f"unknown tool {name!r}")
        text = f"{server_name}.{name} called with {json.dumps(arguments, sort_keys=True)}"
        return [types.TextContent(type="text", text=text)]

    return server


def run_stdio(server: Server) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)


def run_streamable_http(server: Server, port: int) -> None:
    import uvicorn
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.routing import Route

    manager = StreamableHTTPSessionManager(app=server)

    class Endpoint:
        async def __call__(self, scope, receive, send) -> None:
            await manager.handle_request(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        async with manager.run():
            yield

    app = Starlette(routes=[Route("/mcp", endpoint=Endpoint())], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def run_all_streamable_http(port: int) -> None:
    import uvicorn
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.routing import Route

    names = sorted(json.loads(CORPUS.read_text())["servers"])
    managers = {name: StreamableHTTPSessionManager(app=make_server(name)) for name in names}

    class Endpoint:
        def __init__(self, manager: StreamableHTTPSessionManager) -> None:
            self.manager = manager

        async def __call__(self, scope, receive, send) -> None:
            await self.manager.handle_request(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        async with contextlib.AsyncExitStack() as stack:
            for manager in managers.values():
                await stack.enter_async_context(manager.run())
            yield

    routes = [Route(f"/{name}/mcp", endpoint=Endpoint(m)) for name, m in managers.items()]
    app = Starlette(routes=routes, lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "all":
        if sys.argv[2:3] != ["streamable-http"] or len(sys.argv) < 4:
            sys.exit("usage: corpus_upstream.py all streamable-http PORT")
        run_all_streamable_http(int(sys.argv[3]))
        sys.exit(0)
    srv = make_server(sys.argv[1])
    transport = sys.argv[2] if len(sys.argv) > 2 else "stdio"
    if transport == "stdio":
        run_stdio(srv)
    elif transport == "streamable-http":
        run_streamable_http(srv, int(sys.argv[3]))
    else:
        sys.exit(f"unknown transport {transport!r}")
