"""Drives `banger mcp` with the official MCP Python SDK (the `mcp` package), as a coding
agent's client would. Run by the end-to-end test (crates/banger-cli/tests/e2e.rs).

usage: mcp_client.py full|ephemeral|bench  (server command line as JSON in $BANGER_MCP_CMD)

full: initialize, list tools (schemas present), create a sandbox with the workspace, exec
(uname, a failing command, stdin), write/read a file, list a dir, export the workspace patch,
error paths (unknown sandbox, over the limits, forbidden image), delete. Prints a JSON
summary on stdout.
ephemeral: creates sandbox `m2`, prints "created" and waits to be killed.
http: over streamable HTTP at $BANGER_MCP_URL: tools listed, a call and an error.
bench: round trip of sandbox_exec `true`, N times against one sandbox (`$BANGER_MCP_VM`).
"""

import asyncio
import json
import os
import sys
import time

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters


def server() -> StdioServerParameters:
    cmd = json.loads(os.environ["BANGER_MCP_CMD"])
    return StdioServerParameters(command=cmd[0], args=cmd[1:], env=dict(os.environ))


def check(cond, what):
    if not cond:
        raise SystemExit(f"mcp client: {what}")


async def call(client, tool, args=None, ok=True):
    r = await client.call_tool(tool, args or {})
    s = r.structured_content
    if ok:
        check(not r.is_error, f"{tool} {args}: {r.content}")
    else:
        check(r.is_error, f"{tool} {args} should fail: {s}")
        check(s and s.get("code") and s.get("message") and s.get("hint"), f"{tool}: no code/hint: {r.content}")
    return s


async def full():
    summary = {}
    async with Client(server()) as c:
        tools = (await c.list_tools()).tools
        names = {t.name for t in tools}
        for want in ["sandbox_create", "sandbox_list", "sandbox_exec", "sandbox_read_file",
                     "sandbox_write_file", "sandbox_list_dir", "sandbox_ports", "sandbox_logs",
                     "sandbox_workspace_export", "sandbox_stop", "sandbox_delete", "image_list",
                     "sandbox_snapshot", "sandbox_fork"]:
            check(want in names, f"tool {want} missing: {sorted(names)}")
        for t in tools:
            check(t.description and len(t.description) > 20, f"{t.name}: no description")
            check(t.input_schema.get("type") == "object", f"{t.name}: no input schema")
        exec_props = next(t for t in tools if t.name == "sandbox_exec").input_schema["properties"]
        check("description" in exec_props["command"], "exec params are not described")
        summary["tools"] = len(tools)

        # Error paths: code + remediation, nothing created.
        e = await call(c, "sandbox_exec", {"sandbox": "nope", "command": "true"}, ok=False)
        check(e["code"] == "not_found" and "sandbox_list" in e["hint"], e)
        e = await call(c, "sandbox_create", {"vcpu": 64}, ok=False)
        check(e["code"] == "limit_exceeded", e)
        e = await call(c, "sandbox_create", {"image": "alpine:3"}, ok=False)
        check(e["code"] == "forbidden" and "image_list" in e["hint"], e)
        e = await call(c, "sandbox_create", {"nat": True}, ok=False)
        check(e["code"] == "forbidden", e)
        # Every tool that takes a sandbox: an unknown one is not_found, with what to do.
        for tool, args in [("sandbox_exec", {"argv": ["true"]}), ("sandbox_read_file", {"path": "/x"}),
                           ("sandbox_write_file", {"path": "/x", "content": ""}), ("sandbox_list_dir", {}),
                           ("sandbox_ports", {}), ("sandbox_logs", {}), ("sandbox_workspace_export", {}),
                           ("sandbox_stop", {}), ("sandbox_delete", {})]:
            e = await call(c, tool, {"sandbox": "nope", **args}, ok=False)
            check(e["code"] == "not_found" and "sandbox_list" in e["hint"], (tool, e))
        e = await call(c, "sandbox_exec", {"sandbox": "nope"}, ok=False)
        check(e["code"] == "bad_request", e)
        e = await call(c, "sandbox_create", {"from_snapshot": "nope"}, ok=False)
        check(e["code"] == "not_found" and "sandbox_snapshot" in e["hint"], e)
        e = await call(c, "sandbox_create", {"from_snapshot": "nope", "vcpu": 2}, ok=False)
        check(e["code"] == "bad_request", e)
        for tool, args in [("sandbox_snapshot", {}), ("sandbox_fork", {"count": 1})]:
            e = await call(c, tool, {"sandbox": "nope", **args}, ok=False)
            check(e["code"] == "not_found" and "sandbox_list" in e["hint"], (tool, e))

        t0 = time.monotonic()
        sb = await call(c, "sandbox_create", {"name": "m1", "workspace": True})
        summary["create_s"] = round(time.monotonic() - t0, 2)
        check(sb["name"] == "m1" and sb["dns"] == "m1.vm" and sb["created_by_mcp"], sb)
        check(sb["workspace"] == "/root/repo", sb)
        t0 = time.monotonic()
        r = await call(c, "sandbox_exec", {"sandbox": "m1", "argv": ["uname", "-a"]})
        summary["create_to_first_exec_s"] = round(summary["create_s"] + time.monotonic() - t0, 2)
        check(r["exit_code"] == 0 and r["stdout"].startswith("Linux"), r)
        r = await call(c, "sandbox_exec", {"sandbox": "m1", "command": "echo oops >&2; exit 3"})
        check(r["exit_code"] == 3 and r["stderr"] == "oops\n", r)
        r = await call(c, "sandbox_exec", {"sandbox": "m1", "command": "tr a-z A-Z", "stdin": "hello"})
        check(r["stdout"] == "HELLO", r)
        r = await call(c, "sandbox_exec", {"sandbox": "m1", "command": "pwd; cat tracked"})
        check(r["stdout"] == "/root/repo\nv1\n", r)
        r = await call(c, "sandbox_exec", {"sandbox": "m1", "command": "head -c 100000 /dev/zero", "max_output_bytes": 1000})
        check(r["truncated"] and r["stdout_bytes"] == 100000 and "truncated" in r["stdout"], r)
        r = await call(c, "sandbox_exec", {"sandbox": "m1", "command": "sleep 30", "timeout_secs": 1})
        check(r["timed_out"], r)

        await call(c, "sandbox_write_file", {"sandbox": "m1", "path": "/root/repo/new/file.txt", "content": "hi there\n", "mode": "640"})
        r = await call(c, "sandbox_read_file", {"sandbox": "m1", "path": "/root/repo/new/file.txt"})
        check(r["content"] == "hi there\n" and r["encoding"] == "utf-8" and not r["truncated"], r)
        await call(c, "sandbox_write_file", {"sandbox": "m1", "path": "/root/bin.dat", "content": "AAH/", "encoding": "base64"})
        r = await call(c, "sandbox_read_file", {"sandbox": "m1", "path": "/root/bin.dat"})
        check(r["encoding"] == "base64" and r["content"] == "AAH/", r)
        e = await call(c, "sandbox_read_file", {"sandbox": "m1", "path": "/nonexistent"}, ok=False)
        check(e["code"] == "not_found", e)
        r = await call(c, "sandbox_list_dir", {"sandbox": "m1", "path": "/root/repo/new"})
        check(r["entries"] == [{"name": "file.txt", "kind": "file", "mode": "640", "size": 9}], r)

        await call(c, "sandbox_exec", {"sandbox": "m1", "command": "echo v2 > tracked"})
        r = await call(c, "sandbox_workspace_export", {"sandbox": "m1"})
        check("+v2" in r["patch"] and "new/file.txt" in r["patch"] and not r["truncated"], r)
        summary["patch_bytes"] = r["bytes"]

        # Fork: a copy with m1's files and workspace; its writes stay its own.
        t0 = time.monotonic()
        r = await call(c, "sandbox_fork", {"sandbox": "m1", "count": 1})
        kid = r["sandboxes"][0]["name"]
        r = await call(c, "sandbox_exec", {"sandbox": kid, "command": "cat new/file.txt; hostname"})
        summary["fork_to_first_exec_s"] = round(time.monotonic() - t0, 2)
        check(r["stdout"] == f"hi there\n{kid}\n", r)
        await call(c, "sandbox_exec", {"sandbox": kid, "command": "echo kid > only-kid"})
        r = await call(c, "sandbox_exec", {"sandbox": "m1", "command": "test -e only-kid"})
        check(r["exit_code"] == 1, r)
        e = await call(c, "sandbox_fork", {"sandbox": "m1", "count": 50}, ok=False)
        check(e["code"] == "limit_exceeded", e)
        await call(c, "sandbox_delete", {"sandbox": kid})
        # A named snapshot, and a sandbox from it.
        r = await call(c, "sandbox_snapshot", {"sandbox": "m1", "name": "m1-snap"})
        check(r["snapshot"] == "m1-snap", r)
        t0 = time.monotonic()
        r = await call(c, "sandbox_create", {"name": "m2", "from_snapshot": "m1-snap"})
        r = await call(c, "sandbox_exec", {"sandbox": "m2", "command": "cat tracked"})
        summary["from_snapshot_to_first_exec_s"] = round(time.monotonic() - t0, 2)
        check(r["stdout"] == "v2\n", r)
        await call(c, "sandbox_delete", {"sandbox": "m2"})
        # Warm start: a plain create restores the image's template (made by m1's create).
        t0 = time.monotonic()
        await call(c, "sandbox_create", {"name": "m3"})
        r = await call(c, "sandbox_exec", {"sandbox": "m3", "argv": ["true"]})
        summary["warm_create_to_first_exec_s"] = round(time.monotonic() - t0, 2)
        await call(c, "sandbox_delete", {"sandbox": "m3"})

        r = await call(c, "sandbox_list")
        check([s["name"] for s in r["sandboxes"]] == ["m1"], r)
        r = await call(c, "sandbox_logs", {"sandbox": "m1", "tail_lines": 5})
        check(len(r["log"]) > 0, r)
        r = await call(c, "sandbox_ports", {"sandbox": "m1"})
        check(any(p["port"] == 22 for p in r["ports"]), r)
        r = await call(c, "image_list")
        check(any(i["name"] == "debian-bookworm" and i["allowed"] for i in r["images"]), r)

        # exec round trip for `true` over MCP.
        times = []
        for _ in range(10):
            t0 = time.monotonic()
            await call(c, "sandbox_exec", {"sandbox": "m1", "argv": ["true"]})
            times.append(time.monotonic() - t0)
        times.sort()
        summary["exec_true_ms_p50"] = round(times[len(times) // 2] * 1000, 1)

        await call(c, "sandbox_delete", {"sandbox": "m1"})
        r = await call(c, "sandbox_list")
        check(r["sandboxes"] == [], r)
    print(json.dumps(summary))


async def ephemeral():
    async with Client(server()) as c:
        await call(c, "sandbox_create", {"name": "m2"})
        print("created", flush=True)
        await asyncio.sleep(3600)


async def http():
    async with Client(os.environ["BANGER_MCP_URL"]) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        check("sandbox_exec" in names, names)
        r = await call(c, "sandbox_list")
        check(r["sandboxes"] == [], r)
        e = await call(c, "sandbox_exec", {"sandbox": "nope", "command": "true"}, ok=False)
        check(e["code"] == "not_found", e)
    print("http ok")


async def bench():
    vm = os.environ["BANGER_MCP_VM"]
    async with Client(server()) as c:
        times = []
        for _ in range(int(os.environ.get("RUNS", "20"))):
            t0 = time.monotonic()
            await call(c, "sandbox_exec", {"sandbox": vm, "argv": ["true"]})
            times.append(time.monotonic() - t0)
        times.sort()
        print(f"{times[len(times) // 2] * 1000:.1f} {times[int(len(times) * 0.9)] * 1000:.1f}")


asyncio.run({"full": full, "ephemeral": ephemeral, "http": http, "bench": bench}[sys.argv[1]]())
