#!/usr/bin/env python3
"""End-to-end scenario against a running Abacus with the official Python SDK client (`mcp` 2.3.0).

    ABACUS_URL=http://127.0.0.1:1453/mcp .tools/venv/bin/python tests/clients/py_scenario.py
    (or: hack/run-clients.sh URL)

Three parts:
  1. legacy era, high-level API: ``mcp.Client(URL, mode="legacy")`` (initialize handshake, Mcp-Session-Id);
  2. legacy era, low-level API: ``mcp.client.streamable_http.streamable_http_client`` + ``mcp.ClientSession``
     for progress callbacks, resources/subscribe with a message_handler, and completion/complete;
  3. modern era: ``mcp.Client(URL, mode="2026-07-28")`` (stateless, no initialize) and ``mode="auto"``
     (server/discover must select 2026-07-28).

Prints ``PASS <n> checks`` and exits 0, or prints the failing check and exits 1.
Env: ABACUS_URL (default http://127.0.0.1:1453/mcp), ABACUS_CLIENT_TIMEOUT_S (whole run, default 120),
ABACUS_VERBOSE=1 (log each check).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import anyio
import mcp.types as types
from mcp import Client, ClientSession
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

URL = os.environ.get("ABACUS_URL") or "http://127.0.0.1:1453/mcp"
VERBOSE = os.environ.get("ABACUS_VERBOSE") == "1"
RUN_TIMEOUT_S = float(os.environ.get("ABACUS_CLIENT_TIMEOUT_S", "120"))
REQ_TIMEOUT_S = 30.0
MODERN = "2026-07-28"
LEGACY_LATEST = "2025-11-25"

# subscribe_resource / unsubscribe_resource / send_ping are deprecated for 2026-07-28; we call them on purpose.
warnings.simplefilter("ignore", MCPDeprecationWarning)


class State:
    checks = 0
    current = "setup"


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    State.current = name
    yield
    State.checks += 1
    if VERBOSE:
        print(f"ok {State.checks} {name}", flush=True)


def text(result: types.CallToolResult | Any) -> str:
    assert result.content, f"no content: {result!r}"
    first = result.content[0]
    assert isinstance(first, types.TextContent), f"first content item is not text: {first!r}"
    return first.text


def assert_increasing(events: list[tuple[float, float | None, str | None]], what: str) -> None:
    progress = [e[0] for e in events]
    assert all(b > a for a, b in zip(progress, progress[1:])), f"{what}: progress not strictly increasing: {progress}"


EXPECTED_PROMPTS = sorted(
    ["explain-calculation", "generate-problems", "solve_math_problem", "explain_formula", "calculator_assistant"]
)
BATCH_TEXT = "Batch calculation completed. Results:\n1 add 2 = 3\nError: Division by zero\n9 divide 3 = 3"
PROBLEMS_TEXT = "Generate 3 easy-level practice problems for fractions. Include solutions and explanations."


async def legacy_high_level() -> None:
    with step("legacy Client: initialize"):
        client = Client(URL, mode="legacy", read_timeout_seconds=REQ_TIMEOUT_S)
        await client.__aenter__()
    try:
        with step("legacy Client: negotiated version and capabilities"):
            assert client.protocol_version == LEGACY_LATEST, client.protocol_version
            caps = client.server_capabilities
            assert caps.tools is not None, caps
            assert caps.resources is not None and caps.resources.subscribe, caps
            assert caps.prompts is not None and caps.completions is not None, caps
            assert client.server_info is not None and client.server_info.name, client.server_info

        with step("legacy Client: tools/list"):
            names = [t.name for t in (await client.list_tools()).tools]
            for n in ("calculate", "batch_calculate", "advanced_calculate", "demo_progress"):
                assert n in names, f"tool {n} missing from {names}"

        with step("legacy Client: calculate texts"):
            r = await client.call_tool("calculate", {"a": 100, "b": 50, "op": "add"})
            assert not r.is_error and text(r) == "100 add 50 = 150", r
            sc = r.structured_content
            assert isinstance(sc, dict), f"calculate result has no structuredContent object: {r!r}"
            calc_id = sc.get("calculationId", sc.get("id"))
            assert isinstance(calc_id, str) and calc_id, f"no calculationId in {sc}"
            r = await client.call_tool("calculate", {"a": 1, "b": 3, "op": "divide"})
            assert text(r) == "1 divide 3 = 0.3333333333333333", r
            r = await client.call_tool("calculate", {"a": 7.5, "b": 10, "op": "subtract"})
            assert text(r) == "7.5 subtract 10 = -2.5", r

        with step("legacy Client: divide by zero is a tool error"):
            r = await client.call_tool("calculate", {"a": 1, "b": 0, "op": "divide"})
            assert r.is_error is True, r
            assert text(r) == "MCP error -32602: Division by zero is not allowed", r

        with step("legacy Client: batch_calculate"):
            r = await client.call_tool(
                "batch_calculate",
                {
                    "calculations": [
                        {"a": 1, "b": 2, "op": "add"},
                        {"a": 5, "b": 0, "op": "divide"},
                        {"a": 9, "b": 3, "op": "divide"},
                    ]
                },
            )
            assert not r.is_error and text(r) == BATCH_TEXT, r

        with step("legacy Client: advanced_calculate"):
            r = await client.call_tool("advanced_calculate", {"operation": "power", "value": 3, "base": 2})
            assert text(r) == "power(3, 2) = 8", r
            r = await client.call_tool("advanced_calculate", {"operation": "factorial", "value": 5})
            assert text(r) == "factorial(5) = 120", r
            r = await client.call_tool("advanced_calculate", {"operation": "log", "value": 0})
            assert r.is_error is True and text(r) == "MCP error -32602: Logarithm requires positive number", r

        with step("legacy Client: unknown tool is an error"):
            # Spec: protocol error -32602; some SDK servers answer isError instead. Accept either, never success.
            try:
                r = await client.call_tool("nosuchtool", {})
            except MCPError as e:
                assert e.code == -32602, e
            else:
                assert r.is_error is True, f"unknown tool succeeded: {r!r}"

        with step("legacy Client: resources/list"):
            uris = [str(r.uri) for r in (await client.list_resources()).resources]
            for u in ("calculator://constants", "calculator://stats", "formulas://library"):
                assert u in uris, f"resource {u} missing from {uris}"

        with step("legacy Client: read calculator://constants"):
            rr = await client.read_resource("calculator://constants")
            assert len(rr.contents) == 1, rr
            c = rr.contents[0]
            assert isinstance(c, types.TextResourceContents), c
            assert c.mime_type == "application/json", c
            consts = json.loads(c.text)
            assert consts["pi"] == math.pi and consts["e"] == math.e, consts

        with step("legacy Client: resource templates"):
            tpls = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            assert "calculator://history/{calculationId}" in tpls, tpls

        with step("legacy Client: read calculator://history/<id>"):
            rr = await client.read_resource(f"calculator://history/{calc_id}")
            c = rr.contents[0]
            assert isinstance(c, types.TextResourceContents), c
            entry = json.loads(c.text)
            assert entry.get("id", entry.get("calculationId")) == calc_id, entry
            assert entry.get("result") == 150, entry

        with step("legacy Client: prompts/list"):
            names = sorted(p.name for p in (await client.list_prompts()).prompts)
            assert names == EXPECTED_PROMPTS, names

        with step("legacy Client: prompts/get generate-problems"):
            gp = await client.get_prompt("generate-problems", {"topic": "fractions", "difficulty": "easy", "count": "3"})
            assert gp.description == "Generate 3 easy fractions problems", gp
            assert len(gp.messages) == 1 and gp.messages[0].role == "user", gp
            content = gp.messages[0].content
            assert isinstance(content, types.TextContent) and content.text == PROBLEMS_TEXT, gp

        with step("legacy Client: completion/complete"):
            cr = await client.complete(
                types.PromptReference(type="ref/prompt", name="explain-calculation"), {"name": "level", "value": "b"}
            )
            assert "basic" in cr.completion.values, cr
    finally:
        await client.__aexit__(None, None, None)


async def legacy_low_level() -> None:
    updated: list[str] = []
    stats_updated = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            if VERBOSE:
                print(f"  (transport exception: {message!r})", flush=True)
            return
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            if str(message.params.uri) == "calculator://stats":
                stats_updated.set()

    async with streamable_http_client(URL) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=REQ_TIMEOUT_S, message_handler=on_message) as s:
            with step("ClientSession: initialize"):
                init = await s.initialize()
                assert init.protocol_version == LEGACY_LATEST, init

            with step("ClientSession: demo_progress steps=3 progress callback"):
                events: list[tuple[float, float | None, str | None]] = []

                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    events.append((progress, total, message))

                r = await s.call_tool("demo_progress", {"steps": 3}, progress_callback=on_progress)
                assert text(r) == "Progress demonstration completed with 3 steps", r
                await anyio.sleep(0.05)  # progress callbacks run as spawned tasks
                assert len(events) == 3, f"expected 3 progress notifications, got {events}"
                assert all(e[1] == 3 for e in events), f"total must be 3: {events}"
                assert_increasing(events, "demo_progress")

            with step("ClientSession: calculate stream:true progress"):
                events = []
                r = await s.call_tool(
                    "calculate", {"a": 2, "b": 3, "op": "multiply", "stream": True}, progress_callback=on_progress
                )
                assert text(r) == "2 multiply 3 = 6", r
                await anyio.sleep(0.05)
                assert len(events) >= 1, "no progress for calculate stream:true"
                assert_increasing(events, "calculate stream")

            with step("ClientSession: subscribe calculator://stats -> resources/updated"):
                await s.subscribe_resource("calculator://stats")
                r = await s.call_tool("calculate", {"a": 4, "b": 5, "op": "add"})
                assert text(r) == "4 add 5 = 9", r
                with anyio.fail_after(5):
                    await stats_updated.wait()
                await s.unsubscribe_resource("calculator://stats")

            with step("ClientSession: completion/complete"):
                cr = await s.complete(
                    types.PromptReference(type="ref/prompt", name="explain-calculation"),
                    {"name": "level", "value": "b"},
                )
                assert "basic" in cr.completion.values, cr
        # leaving streamable_http_client sends DELETE for the session (terminate_on_close=True)


async def modern() -> None:
    async with Client(URL, mode=MODERN, read_timeout_seconds=REQ_TIMEOUT_S) as client:
        with step("modern Client: pinned 2026-07-28"):
            assert client.protocol_version == MODERN, client.protocol_version

        with step("modern Client: tools/list"):
            names = [t.name for t in (await client.list_tools()).tools]
            for n in ("calculate", "batch_calculate", "advanced_calculate", "demo_progress"):
                assert n in names, f"tool {n} missing from {names}"

        with step("modern Client: calculate"):
            r = await client.call_tool("calculate", {"a": 1, "b": 3, "op": "divide"})
            assert not r.is_error and text(r) == "1 divide 3 = 0.3333333333333333", r
            r = await client.call_tool("calculate", {"a": 1, "b": 0, "op": "divide"})
            assert r.is_error is True and text(r) == "MCP error -32602: Division by zero is not allowed", r

        with step("modern Client: demo_progress progress"):
            events: list[tuple[float, float | None, str | None]] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                events.append((progress, total, message))

            r = await client.call_tool("demo_progress", {"steps": 3}, progress_callback=on_progress)
            assert text(r) == "Progress demonstration completed with 3 steps", r
            await anyio.sleep(0.05)
            assert len(events) == 3 and all(e[1] == 3 for e in events), events
            assert_increasing(events, "modern demo_progress")

        with step("modern Client: prompts/list"):
            names = sorted(p.name for p in (await client.list_prompts()).prompts)
            assert names == EXPECTED_PROMPTS, names

        with step("modern Client: resources/list and read"):
            uris = [str(r.uri) for r in (await client.list_resources()).resources]
            assert "calculator://constants" in uris, uris
            rr = await client.read_resource("calculator://constants")
            c = rr.contents[0]
            assert isinstance(c, types.TextResourceContents) and json.loads(c.text)["pi"] == math.pi, rr

    with step("auto Client: server/discover selects 2026-07-28"):
        async with Client(URL, read_timeout_seconds=REQ_TIMEOUT_S) as client:
            assert client.protocol_version == MODERN, f"mode=auto negotiated {client.protocol_version}"


def leaf_exception(exc: BaseException) -> BaseException:
    """anyio task groups wrap failures in (Base)ExceptionGroup: report the first real one."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def main() -> int:
    print(f"py_scenario: mcp {_mcp_version()} against {URL}", flush=True)
    try:
        with anyio.fail_after(RUN_TIMEOUT_S):
            await legacy_high_level()
            await legacy_low_level()
            await modern()
    except BaseException as e:  # noqa: BLE001 - report anything, including cancellation by the run timeout
        leaf = leaf_exception(e)
        if isinstance(leaf, TimeoutError):
            detail = f"timed out (run limit {RUN_TIMEOUT_S:g} s, request limit {REQ_TIMEOUT_S:g} s): {leaf}"
        else:
            detail = f"{type(leaf).__name__}: {leaf}"
        print(f"FAIL [{State.current}] after {State.checks} passed checks: {detail}", file=sys.stderr, flush=True)
        if VERBOSE:
            traceback.print_exception(e)
        return 1
    print(f"PASS {State.checks} checks", flush=True)
    return 0


def _mcp_version() -> str:
    from importlib.metadata import version

    return version("mcp")


if __name__ == "__main__":
    sys.exit(anyio.run(main))
