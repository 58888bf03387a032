#!/usr/bin/env python3
"""An MCP client driven line by line, for the end-to-end tests of Portcullis' MCP server.

It connects with the official Python SDK (PyPI `mcp`) over streamable HTTP or stdio, then
reads one JSON command per line on standard input and answers each with one JSON line on
standard output:

    {"op": "list"}                                  -> {"ok": true, "tools": [...]}
    {"op": "call", "name": N, "arguments": {...},
     "meta": {...}?}                                -> {"ok": true, "result": {...}}
                                                       or {"ok": false, "error": {"code", "message"}}

The first line it writes says how the connection was negotiated:

    {"ready": true, "protocol_version": "...", "server": {...}}

Usage:
    client.py http URL TOKEN [--mode auto|legacy]
    client.py stdio [--mode auto|legacy] -- COMMAND ARGS...   (the token is passed on from
                                                               PORTCULLIS_AGENT_TOKEN)
"""

import argparse
import json
import os
import sys

import anyio
import httpx2
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def server_for(args):
    if args.transport == "http":
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {args.token}"}, timeout=90)
        return streamable_http_client(args.url, http_client=http)
    command = args.command
    if command and command[0] == "--":
        command = command[1:]
    env = {"PORTCULLIS_AGENT_TOKEN": os.environ["PORTCULLIS_AGENT_TOKEN"]}
    for name in ("PATH", "HOME", "PORTCULLIS_LOG"):
        if name in os.environ:
            env[name] = os.environ[name]
    return StdioServerParameters(command=command[0], args=command[1:], env=env)


async def handle(client, command):
    op = command.get("op")
    try:
        if op == "list":
            result = await client.list_tools(cache_mode="refresh")
            return {"ok": True, "tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in result.tools]}
        if op == "call":
            result = await client.call_tool(
                command["name"], command.get("arguments") or {}, meta=command.get("meta")
            )
            return {"ok": True, "result": result.model_dump(mode="json", by_alias=True, exclude_none=True)}
        return {"ok": False, "error": {"code": None, "message": f"unknown op {op!r}"}}
    except MCPError as e:
        return {"ok": False, "error": {"code": e.code, "message": e.error.message}}


async def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="transport", required=True)
    http = sub.add_parser("http")
    http.add_argument("url")
    http.add_argument("token")
    http.add_argument("--mode", default="auto")
    stdio = sub.add_parser("stdio")
    stdio.add_argument("--mode", default="auto")
    stdio.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()

    async with Client(server_for(args), mode=args.mode) as client:
        info = client.server_info
        emit({
            "ready": True,
            "protocol_version": client.protocol_version,
            "server": info.model_dump(mode="json", exclude_none=True) if info else None,
        })
        stdin = anyio.wrap_file(sys.stdin)
        async for line in stdin:
            line = line.strip()
            if not line:
                continue
            emit(await handle(client, json.loads(line)))


if __name__ == "__main__":
    anyio.run(main)
