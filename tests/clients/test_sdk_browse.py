"""The SDK's listings of a project's jobs and scope ids (``jobs``, ``scopes``), both clients,
against the live server."""

from __future__ import annotations

import json

import pytest

from tests.clients.conftest import Facade
from tests.scripted_llm import ScriptedLLM


async def test_jobs_newest_first_by_status_across_pages(sdk: Facade, user: str,
                                                        scripted_llm: ScriptedLLM) -> None:
    scripted_llm.responder = lambda _body: json.dumps({"facts": []})
    first = await sdk.add("Hello there", user_id=user, wait=True)
    second = await sdk.add("Hello again", user_id=user, wait=True)
    scripted_llm.responder = lambda _body: "this is not JSON"
    failed = await sdk.wait_for_job((await sdk.add("I like jazz", user_id=user)).id,
                                    timeout=60, poll_interval=0.05)

    listed = await sdk.collect("jobs", page_size=1)
    assert [job.id for job in listed] == [failed.id, second.id, first.id]
    assert [job.status for job in listed] == ["FAILED", "SUCCEEDED", "SUCCEEDED"]
    pages = [r for r in sdk.requests if r.url.path == "/v1/jobs"]
    assert [(r.url.params.get("limit"), "cursor" in r.url.params) for r in pages] == [
        ("1", False), ("1", True), ("1", True)]
    only_failed = await sdk.collect("jobs", status="FAILED")
    assert [(job.id, job.error.code if job.error else None) for job in only_failed] == [
        (failed.id, "llm_bad_output")]


async def test_scope_ids_with_their_counts_by_prefix(sdk: Facade) -> None:
    for user, texts in (("ann", ["a", "b"]), ("anna", ["c"]), ("bob", ["d"])):
        for text in texts:
            await sdk.add(f"Note {text}", user_id=user, infer=False)
    await sdk.add("Agent note", agent_id="planner", infer=False)

    users = await sdk.collect("scopes", kind="user", page_size=2)
    assert [(scope.id, scope.memories) for scope in users] == [("ann", 2), ("anna", 1),
                                                                ("bob", 1)]
    assert [s.id for s in await sdk.collect("scopes", kind="user", prefix="ann")] == [
        "ann", "anna"]
    assert [s.id for s in await sdk.collect("scopes", kind="agent")] == ["planner"]
    assert await sdk.collect("scopes", kind="run") == []


async def test_listing_arguments_are_checked(sdk: Facade) -> None:
    with pytest.raises(ValueError, match="page_size"):
        await sdk.collect("jobs", page_size=0)
    with pytest.raises(ValueError, match="page_size"):
        await sdk.collect("scopes", kind="user", page_size=0)
