"""MCP tasks (the io.modelcontextprotocol/tasks extension, SEP-2663) for the Python ``mcp`` 2.x
client: the client declares the extension, a diagnosis answers ``resultType: "task"``, and the
claim's resolver follows the task with ``tasks/get`` until it ends.

``TasksExtension(poll=...)`` lets a test decide where each ``tasks/get`` goes (another instance,
through a load balancer, after killing the creator); by default it goes to the same client.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Literal

import anyio

import support

TASKS = "io.modelcontextprotocol/tasks"
# The protocol version of stateless MCP (the mode tasks are tested in).
MODERN = "2026-07-28"
TERMINAL = {"completed", "failed", "cancelled"}


def available() -> bool:
    try:
        import mcp.client.extension  # noqa: F401
        return True
    except ImportError:
        return False


if available():
    import mcp_types
    from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
    from pydantic import ConfigDict

    class TaskCreated(mcp_types.Result):
        """The answer of a tools/call that became a task."""
        model_config = ConfigDict(extra="allow")
        result_type: Literal["task"]
        task_id: str
        status: str
        status_message: str | None = None
        poll_interval_ms: int | None = None
        ttl_ms: int | None = None

    class TaskState(mcp_types.Result):
        """A tasks/get answer: the task and, once completed, the tool result."""
        model_config = ConfigDict(extra="allow")
        task_id: str
        status: str
        status_message: str | None = None
        poll_interval_ms: int | None = None
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None

    class Ack(mcp_types.Result):
        model_config = ConfigDict(extra="allow")

    class TaskIdParams(mcp_types.RequestParams):
        task_id: str

    class GetTask(mcp_types.Request[TaskIdParams, Literal["tasks/get"]]):
        method: Literal["tasks/get"] = "tasks/get"
        name_param = "taskId"

    class CancelTask(mcp_types.Request[TaskIdParams, Literal["tasks/cancel"]]):
        method: Literal["tasks/cancel"] = "tasks/cancel"
        name_param = "taskId"

    async def get_task(session, task_id: str) -> TaskState:
        return await session.send_request(GetTask(params=TaskIdParams(task_id=task_id)), TaskState)

    async def cancel_task(session, task_id: str) -> Ack:
        return await session.send_request(CancelTask(params=TaskIdParams(task_id=task_id)), Ack)

    Poller = Callable[[TaskCreated, ClaimContext], Awaitable[TaskState]]

    async def follow(session, task_id: str, *, timeout: float = 60, states: list | None = None) -> TaskState:
        """tasks/get on ``session`` until the task ends, honouring pollIntervalMs."""
        with anyio.fail_after(timeout):
            while True:
                state = await get_task(session, task_id)
                if states is not None:
                    states.append(state)
                if state.status in TERMINAL:
                    return state
                await anyio.sleep(min((state.poll_interval_ms or 200) / 1000, 0.5))

    class TasksExtension(ClientExtension):
        identifier = TASKS

        def __init__(self, poll: Poller | None = None):
            self.created: list[TaskCreated] = []
            self.final: list[TaskState] = []
            self._poll = poll

        def claims(self):
            return [ResultClaim(result_type="task", model=TaskCreated, resolve=self._resolve)]

        async def _resolve(self, created: TaskCreated, ctx: ClaimContext):
            self.created.append(created)
            if self._poll is not None:
                state = await self._poll(created, ctx)
            else:
                state = await follow(ctx.session, created.task_id)
            self.final.append(state)
            if state.status != "completed":
                return mcp_types.CallToolResult(content=[mcp_types.TextContent(
                    type="text", text=f"task ended {state.status}")], is_error=True)
            return mcp_types.CallToolResult.model_validate(state.result)

    def client(url: str, ext: TasksExtension | None = None, token: str | None = None):
        """An mcp 2.x ``Client`` of ``url`` in the stateless (MODERN) mode, with ``ext`` (by default
        a TasksExtension that follows each task to its end) and, if given, a bearer token."""
        from mcp.client.client import Client
        server = url
        if token is not None:
            from mcp.client.streamable_http import streamable_http_client
            server = streamable_http_client(url, http_client=support.http_client(support.bearer(token)))
        return Client(server, extensions=[ext or TasksExtension()], mode=MODERN)
