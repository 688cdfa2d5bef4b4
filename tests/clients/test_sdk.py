"""End-to-end tests of the Python SDK against the live server (real Postgres and embeddings;
consolidation in-process, its LLM the scripted OpenAI-compatible server).

Every scenario runs twice, once per client: ``Anamnesis`` (its blocking calls are made in a
worker thread so the session event loop stays free) and ``AsyncAnamnesis``. Each test gets a
fresh project, so tests never see each other's memories.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from anamnesis import (
    Anamnesis,
    AnamnesisError,
    AsyncAnamnesis,
    AuthenticationError,
    ConflictError,
    IdempotencyKeyReusedError,
    InvalidFilterError,
    Job,
    JobTimeoutError,
    NotFoundError,
    ValidationError,
)

from tests.clients.conftest import Facade, open_client
from tests.consolidate.scripted_brain import Brain, ends
from tests.scripted_llm import Reply, ScriptedLLM

KeyFactory = Callable[..., Awaitable[str]]


FACTS = {
    "I like jazz": ["User likes jazz"],
    "I live in Porto": ["User lives in Porto"],
    "I moved to Lisbon": ["User lives in Lisbon"],
}
JAN_2024 = datetime(2024, 1, 1, tzinfo=UTC)
JAN_2025 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def brain(scripted_llm: ScriptedLLM) -> Brain:
    """The server's LLM: extracts FACTS and lets a move to Lisbon supersede living in Porto."""
    thinking = Brain(facts=FACTS, still_true=ends(("User lives in Lisbon", "User lives in Porto")))
    scripted_llm.responder = thinking
    return thinking


async def _consolidate(sdk: Facade, text: str, user: str, **kwargs: Any) -> Job:
    job = await sdk.add(text, user_id=user, **kwargs)
    finished = await sdk.wait_for_job(job.id, timeout=60, poll_interval=0.05)
    assert finished.status == "SUCCEEDED", finished.error
    return finished


ONLY_FACTS = {"kind": "fact"}


async def _add_one(sdk: Facade, text: str, user: str, **kwargs: Any) -> str:
    result = await sdk.add(text, user_id=user, infer=False, **kwargs)
    assert len(result.results) == 1
    assert result.results[0].event == "ADD"
    assert result.results[0].memory == text
    return str(result.results[0].id)


async def test_health(sdk: Facade) -> None:
    assert await sdk.health() is True


async def test_add_verbatim_then_search_ranks_it_first(sdk: Facade, user: str) -> None:
    peanuts = await _add_one(sdk, "I am allergic to peanuts", user)
    await _add_one(sdk, "My favourite city is Lisbon", user)
    await _add_one(sdk, "I cycle to work on a red bicycle", user)

    hits = await sdk.search("peanut allergy", user_id=user, top_k=3)

    assert [hit.id for hit in hits][:1] == [peanuts]
    assert len(hits) == 3
    assert all(isinstance(hit.score, float) for hit in hits)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].memory == "I am allergic to peanuts"
    assert hits[0].user_id == user
    assert all(hit.explain is None for hit in hits)

    dense = await sdk.search("peanut allergy", user_id=user, top_k=3, ranking="dense",
                             explain=True)
    assert [hit.id for hit in dense][:1] == [peanuts]
    for hit in dense:  # ranked by cosine alone: the score is the similarity
        assert hit.score == pytest.approx(hit.similarity)
        assert hit.explain is not None
        assert hit.explain["dense"]["score"] == pytest.approx(hit.similarity)
    words = await sdk.search("bicycle", user_id=user, top_k=3, ranking="lexical")
    assert [hit.memory for hit in words] == ["I cycle to work on a red bicycle"]
    # Added one by one, the three are one conversation: a hit comes with its neighbours.
    [middle] = await sdk.search("favourite city", user_id=user, top_k=1, context=True)
    assert middle.context is not None
    assert [m.memory for m in middle.context] == ["I am allergic to peanuts",
                                                  "I cycle to work on a red bicycle"]


async def test_search_is_scoped_and_filtered(sdk: Facade, user: str) -> None:
    await _add_one(sdk, "Dinner tonight is pasta", user, metadata={"topic": "food"})
    trip = await _add_one(sdk, "Flying to Tokyo in May", user, metadata={"topic": "travel"})
    await _add_one(sdk, "Flying to Paris in June", f"{user}-other")

    hits = await sdk.search("flights", user_id=user, filters={"metadata.topic": "travel"})
    assert [hit.id for hit in hits] == [trip]
    assert hits[0].metadata["topic"] == "travel"


async def test_re_adding_the_same_text_is_another_message(sdk: Facade, user: str) -> None:
    first = await _add_one(sdk, "I speak Portuguese", user)
    again = await sdk.add("I speak Portuguese", user_id=user, infer=False)
    [added] = again.results
    assert added.event == "ADD"
    assert added.id != first
    listed = await sdk.get_all(user_id=user, kind="message")
    assert {memory.id for memory in listed} == {first, added.id}
    assert {memory.kind for memory in listed} == {"message"}
    assert await sdk.get_all(user_id=user, kind="fact") == []


async def test_get(sdk: Facade, user: str) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    memory_id = await _add_one(
        sdk, "My dog is called Rex", user, agent_id="pet-bot", metadata={"pet": "dog"},
        expires_at=expires,
    )

    memory = await sdk.get(memory_id)

    assert memory.id == memory_id
    assert memory.memory == "My dog is called Rex"
    assert (memory.user_id, memory.agent_id, memory.run_id) == (user, "pet-bot", None)
    assert memory.metadata["pet"] == "dog"  # the server may add keys of its own (e.g. role)
    assert memory.expires_at == expires
    assert memory.created_at.tzinfo is not None
    assert memory.updated_at >= memory.created_at


async def test_get_all_follows_cursors_across_pages(sdk: Facade, user: str) -> None:
    added = {await _add_one(sdk, f"Fact number {n} about the garden", user) for n in range(5)}
    await _add_one(sdk, "Someone else's fact", f"{user}-other")
    sdk.requests.clear()

    memories = await sdk.get_all(user_id=user, page_size=2)

    ids = [memory.id for memory in memories]
    assert len(ids) == 5
    assert set(ids) == added
    pages = [r for r in sdk.requests if r.method == "GET" and r.url.path == "/v1/memories"]
    assert len(pages) == 3
    assert [r.url.params.get("limit") for r in pages] == ["2", "2", "2"]
    assert pages[0].url.params.get("cursor") is None
    assert all(r.url.params.get("cursor") for r in pages[1:])


async def test_update_text_then_history(sdk: Facade, user: str) -> None:
    memory_id = await _add_one(sdk, "I live in Porto", user)

    updated = await sdk.update(memory_id, text="I live in Lisbon")

    assert updated.id == memory_id
    assert updated.memory == "I live in Lisbon"
    assert (await sdk.get(memory_id)).memory == "I live in Lisbon"
    hits = await sdk.search("Which city do I live in?", user_id=user)
    assert [(hit.id, hit.memory) for hit in hits] == [(memory_id, "I live in Lisbon")]
    events = await sdk.history(memory_id)
    assert [event.event for event in events] == ["ADD", "UPDATE"]
    assert all(event.memory_id == memory_id for event in events)
    assert events[0].new_memory == "I live in Porto"
    assert (events[1].old_memory, events[1].new_memory) == ("I live in Porto", "I live in Lisbon")


async def test_update_metadata_replaces_it(sdk: Facade, user: str) -> None:
    memory_id = await _add_one(sdk, "I drink green tea", user, metadata={"v": 1})

    updated = await sdk.update(memory_id, metadata={"v": 2})

    assert updated.memory == "I drink green tea"
    assert updated.metadata == {"v": 2}
    events = await sdk.history(memory_id)
    assert [event.event for event in events] == ["ADD", "UPDATE"]
    assert events[1].old_metadata is not None
    assert events[1].old_metadata["v"] == 1
    assert events[1].new_metadata == {"v": 2}


async def test_delete(sdk: Facade, user: str) -> None:
    memory_id = await _add_one(sdk, "Temporary note", user)

    assert await sdk.delete(memory_id) is None

    with pytest.raises(NotFoundError) as raised:
        await sdk.get(memory_id)
    assert raised.value.status_code == 404
    assert raised.value.code == "not_found"
    assert raised.value.request_id
    with pytest.raises(NotFoundError):
        await sdk.delete(memory_id)
    with pytest.raises(NotFoundError):
        await sdk.history(memory_id)


async def test_delete_all_returns_count(sdk: Facade, user: str) -> None:
    for n in range(3):
        await _add_one(sdk, f"Disposable fact {n}", user)
    keeper = await _add_one(sdk, "Keep me", f"{user}-other")

    assert await sdk.delete_all(user_id=user) == 3

    assert await sdk.get_all(user_id=user) == []
    assert [memory.id for memory in await sdk.get_all(user_id=f"{user}-other")] == [keeper]
    assert await sdk.delete_all(user_id=user) == 0


async def test_delete_user_erases_every_agent_and_run(sdk: Facade, user: str) -> None:
    await _add_one(sdk, "Alone", user)
    await _add_one(sdk, "With an agent", user, agent_id="helper")
    keeper = await _add_one(sdk, "Someone else's", f"{user}/other")

    assert await sdk.delete_user(user) == 2

    assert await sdk.get_all(user_id=user) == []
    assert [memory.id for memory in await sdk.get_all(user_id=f"{user}/other")] == [keeper]
    assert await sdk.delete_user(user) == 0
    sdk.requests.clear()
    with pytest.raises(ValueError):
        await sdk.delete_user("")
    assert sdk.requests == []


async def test_delete_all_needs_a_scope_before_sending(sdk: Facade) -> None:
    sdk.requests.clear()
    with pytest.raises(ValueError):
        await sdk.delete_all()
    assert sdk.requests == []


async def test_bad_key_is_an_authentication_error(kind: str, live_server: Any) -> None:
    async with open_client(kind, live_server.base_url, "ak_definitely_not_a_key") as bad:
        with pytest.raises(AuthenticationError) as raised:
            await bad.search("anything", user_id="someone")
    assert raised.value.status_code == 401
    assert raised.value.code == "unauthorized"


async def test_unknown_filter_field_is_an_invalid_filter(sdk: Facade, user: str) -> None:
    with pytest.raises(InvalidFilterError) as raised:
        await sdk.search("anything", user_id=user, filters={"colour": "red"})
    assert isinstance(raised.value, ValidationError)
    assert raised.value.status_code == 422
    assert "colour" in raised.value.detail


async def test_add_infers_by_default_and_wait_for_job_follows_it(
    sdk: Facade, user: str, brain: Brain
) -> None:
    job = await sdk.add("I like jazz", user_id=user)

    assert isinstance(job, Job)
    assert job.id
    assert (job.status, job.done, job.results) == ("PENDING", False, [])
    sent = json.loads(sdk.requests[-1].content)
    assert (sent["infer"], "wait" in sent) == (True, False)

    finished = await sdk.wait_for_job(job.id, timeout=60, poll_interval=0.05)

    assert finished.id == job.id
    assert (finished.status, finished.done, finished.error) == ("SUCCEEDED", True, None)
    assert [(r.memory, r.event) for r in finished.results] == [("User likes jazz", "ADD")]
    assert finished.attempts == 1
    assert finished.usage.model == "scripted-model"
    assert finished.usage.llm_calls == 2  # extraction and graph: nothing to resolve against
    assert finished.usage.prompt_tokens > 0
    assert finished.usage.completion_tokens > 0
    assert finished.episode_id
    assert finished.created_at is not None
    assert finished.started_at is not None
    assert finished.completed_at is not None
    assert finished.completed_at >= finished.started_at >= finished.created_at
    assert await sdk.get_job(job.id) == finished
    hits = await sdk.search("What music does the user like?", user_id=user, filters=ONLY_FACTS)
    assert [(hit.id, hit.memory) for hit in hits] == [(finished.results[0].id, "User likes jazz")]
    # Both kinds by default, the fact standing for the message it came from.
    said = await sdk.search("What music does the user like?", user_id=user)
    assert [(hit.memory, hit.kind) for hit in said] == [("User likes jazz", "fact")]
    messages = await sdk.search("What music does the user like?", user_id=user,
                                filters={"kind": "message"})
    assert [(hit.memory, hit.kind) for hit in messages] == [("I like jazz", "message")]
    assert brain.extract_calls == 1


async def test_add_wait_returns_the_finished_job(sdk: Facade, user: str, brain: Brain) -> None:
    job = await sdk.add("I like jazz", user_id=user, wait=True)

    assert (job.status, job.done) == ("SUCCEEDED", True)
    assert [(r.memory, r.event) for r in job.results] == [("User likes jazz", "ADD")]
    assert job.episode_id
    held = sdk.requests[-1]
    assert json.loads(held.content)["wait"] is True
    # The server may hold the request for up to its max_wait_s: the read timeout makes room.
    assert held.extensions["timeout"]["read"] > 600
    assert await sdk.get_job(job.id) == job
    assert sdk.requests[-1].extensions["timeout"]["read"] == 30


async def test_wait_for_job_times_out_with_the_job_as_it_stands(
    sdk: Facade, user: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(Reply.slow(1.5, json.dumps({"facts": []})))
    job = await sdk.add("Just saying hello", user_id=user)

    with pytest.raises(JobTimeoutError) as raised:
        await sdk.wait_for_job(job.id, timeout=0.3, poll_interval=0.05)

    assert isinstance(raised.value, TimeoutError)
    assert raised.value.job.id == job.id
    assert raised.value.job.status in ("PENDING", "RUNNING")
    finished = await sdk.wait_for_job(job.id, timeout=60, poll_interval=0.05)
    assert (finished.status, finished.results) == ("SUCCEEDED", [])


async def test_failed_job_is_retried_from_its_stored_episode(
    sdk: Facade, user: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.responder = lambda _body: "this is not JSON"
    job = await sdk.add("I like jazz", user_id=user)

    failed = await sdk.wait_for_job(job.id, timeout=60, poll_interval=0.05)

    assert (failed.status, failed.done, failed.results) == ("FAILED", True, [])
    assert failed.error is not None
    assert failed.error.code == "llm_bad_output"
    assert failed.error.detail
    assert failed.usage.llm_calls >= 1

    thinking = Brain(facts=FACTS)
    scripted_llm.responder = thinking
    retried = await sdk.retry_job(job.id)

    assert retried.id == job.id
    assert (retried.status, retried.error, retried.attempts) == ("PENDING", None, 0)
    finished = await sdk.wait_for_job(job.id, timeout=60, poll_interval=0.05)
    assert finished.status == "SUCCEEDED"
    assert [(r.memory, r.event) for r in finished.results] == [("User likes jazz", "ADD")]
    assert finished.episode_id == failed.episode_id
    assert thinking.extract_calls == 1


async def test_retrying_a_job_that_did_not_fail_conflicts(
    sdk: Facade, user: str, brain: Brain, kind: str, live_server: Any,
    api_key_factory: KeyFactory,
) -> None:
    job = await _consolidate(sdk, "I like jazz", user)

    with pytest.raises(ConflictError) as raised:
        await sdk.retry_job(job.id)

    assert not isinstance(raised.value, IdempotencyKeyReusedError)
    assert (raised.value.status_code, raised.value.code) == (409, "conflict")
    assert "SUCCEEDED" in raised.value.detail
    assert (await sdk.get_job(job.id)).status == "SUCCEEDED"
    async with open_client(kind, live_server.base_url, await api_key_factory()) as stranger:
        with pytest.raises(NotFoundError):
            await stranger.get_job(job.id)
        with pytest.raises(NotFoundError):
            await stranger.retry_job(job.id)
    with pytest.raises(NotFoundError):
        await sdk.get_job(str(uuid.uuid4()))


async def test_project_and_call_instructions_reach_the_extraction_prompt(
    sdk: Facade, user: str, brain: Brain, scripted_llm: ScriptedLLM
) -> None:
    project = await sdk.get_project()
    assert project.id
    assert project.name
    assert project.instructions is None

    updated = await sdk.set_instructions("Only keep music preferences.")

    assert (updated.id, updated.instructions) == (project.id, "Only keep music preferences.")
    assert (await sdk.get_project()).instructions == "Only keep music preferences."
    await _consolidate(sdk, "I like jazz", user, instructions="Write facts in English.")
    extraction = [r for r in scripted_llm.requests
                  if r.body["response_format"]["json_schema"]["name"] == "ExtractedFacts"]
    system = extraction[-1].messages[0]["content"]
    assert system.index("Only keep music preferences.") < system.index("Write facts in English.")

    assert (await sdk.set_instructions(None)).instructions is None
    assert (await sdk.get_project()).instructions is None


async def test_get_shows_where_a_memory_came_from(sdk: Facade, user: str, brain: Brain) -> None:
    job = await _consolidate(sdk, [{"role": "assistant", "content": "Any music tastes?"},
                                   {"role": "user", "content": "I like jazz"}],
                             user, observed_at=JAN_2024)

    memory = await sdk.get(job.results[0].id)

    assert (memory.memory, memory.user_id) == ("User likes jazz", user)
    assert (memory.valid_at, memory.invalid_at, memory.superseded_by) == (JAN_2024, None, None)
    assert memory.supersedes == []
    [source] = memory.sources
    assert (source.episode_id, source.observed_at) == (job.episode_id, JAN_2024)
    assert source.message_indices == [1]
    assert [(m.index, m.role, m.content) for m in source.messages] == [(1, "user", "I like jazz")]
    [event] = await sdk.history(memory.id)
    assert (event.event, event.decision, event.new_memory) == ("ADD", "ADD", "User likes jazz")
    assert (event.episode_id, event.job_id) == (job.episode_id, job.id)
    assert event.message_indices == [1]
    assert event.model == "scripted-model"
    assert event.prompt_version
    assert event.related_memory_id is None
    verbatim = await sdk.get(await _add_one(sdk, "Stored as it stands", user))
    assert (verbatim.kind, verbatim.supersedes) == ("message", [])
    [own] = verbatim.sources  # a message's source is its own place in its episode
    assert [(m.index, m.content) for m in own.messages] == [(0, "Stored as it stands")]


async def test_superseded_facts_stay_readable_in_the_past(
    sdk: Facade, user: str, brain: Brain
) -> None:
    porto = (await _consolidate(sdk, "I live in Porto", user, observed_at=JAN_2024)).results[0]
    moved = await _consolidate(sdk, "I moved to Lisbon", user, observed_at=JAN_2025)
    [lisbon] = moved.results
    assert (lisbon.event, lisbon.memory) == ("SUPERSEDE", "User lives in Lisbon")
    assert (lisbon.previous_id, lisbon.previous_memory) == (porto.id, "User lives in Porto")
    question = "Where does the user live?"
    june_2024 = datetime(2024, 6, 1, tzinfo=UTC)

    assert [h.id for h in await sdk.search(question, user_id=user, filters=ONLY_FACTS)] == [
        lisbon.id]
    then = await sdk.search(question, user_id=user, as_of=june_2024, filters=ONLY_FACTS)
    assert [(h.id, h.memory) for h in then] == [(porto.id, "User lives in Porto")]
    assert await sdk.search(question, user_id=user, as_of=datetime(2023, 1, 1, tzinfo=UTC),
                            filters=ONLY_FACTS) == []
    everything = await sdk.search(question, user_id=user, include_superseded=True,
                                  filters=ONLY_FACTS)
    assert {h.id for h in everything} == {porto.id, lisbon.id}
    sent = json.loads(sdk.requests[-1].content)
    assert sent["include_superseded"] is True

    assert [m.id for m in await sdk.get_all(user_id=user, kind="fact")] == [lisbon.id]
    assert [m.id for m in await sdk.get_all(user_id=user, as_of=june_2024, kind="fact")] == [
        porto.id]
    assert {m.id for m in await sdk.get_all(user_id=user, include_superseded=True,
                                            kind="fact")} == {porto.id, lisbon.id}

    old = await sdk.get(porto.id)
    assert (old.invalid_at, old.superseded_by) == (JAN_2025, lisbon.id)
    new = await sdk.get(lisbon.id)
    assert (new.valid_at, new.invalid_at, new.supersedes) == (JAN_2025, None, [porto.id])
    events = await sdk.history(porto.id)
    assert [(e.event, e.decision) for e in events] == [("ADD", "ADD"), ("SUPERSEDE", "SUPERSEDE")]
    assert events[1].related_memory_id == lisbon.id
    assert events[1].job_id == moved.id
    [added] = await sdk.history(lisbon.id)
    assert (added.event, added.decision, added.related_memory_id) == ("ADD", "SUPERSEDE",
                                                                       porto.id)


async def test_timeline_and_inference_arguments_are_checked_before_sending(
    sdk: Facade, user: str
) -> None:
    sdk.requests.clear()
    with pytest.raises(ValueError, match="exclude each other"):
        await sdk.search("x", user_id=user, as_of=JAN_2024, include_superseded=True)
    with pytest.raises(ValueError, match="exclude each other"):
        await sdk.get_all(user_id=user, as_of=JAN_2024, include_superseded=True)
    with pytest.raises(ValueError, match="timezone-aware"):
        await sdk.search("x", user_id=user, as_of=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="infer=True"):
        await sdk.add("x", user_id=user, infer=False, wait=True)
    with pytest.raises(ValueError, match="infer=True"):
        await sdk.add("x", user_id=user, infer=False, instructions="be brief")
    with pytest.raises(ValueError, match="poll_interval"):
        await sdk.wait_for_job("some-job", poll_interval=0)
    with pytest.raises(ValueError, match="job_id"):
        await sdk.get_job("")
    assert sdk.requests == []


async def test_too_long_instructions_are_a_validation_error(sdk: Facade, user: str) -> None:
    with pytest.raises(ValidationError) as raised:
        await sdk.set_instructions("x" * 4001)
    assert raised.value.status_code == 422
    with pytest.raises(ValidationError):
        await sdk.add("I like jazz", user_id=user, instructions="x" * 4001)
    assert (await sdk.get_project()).instructions is None


async def test_idempotent_retry_replays_and_reuse_conflicts(sdk: Facade, user: str) -> None:
    key = f"idem-{uuid.uuid4().hex}"
    messages = [{"role": "user", "content": "I play the cello"},
                {"role": "assistant", "content": "Noted: you play the cello"}]

    first = await sdk.add(messages, user_id=user, infer=False, idempotency_key=key)
    retry = await sdk.add(messages, user_id=user, infer=False, idempotency_key=key)

    assert first.results
    assert [m.id for m in retry.results] == [m.id for m in first.results]
    assert len(await sdk.get_all(user_id=user)) == len(first.results)
    with pytest.raises(IdempotencyKeyReusedError) as raised:
        await sdk.add("I play the violin", user_id=user, infer=False, idempotency_key=key)
    assert isinstance(raised.value, ConflictError)
    assert raised.value.status_code == 409


@pytest.mark.parametrize("cls", [Anamnesis, AsyncAnamnesis])
def test_missing_api_key_fails_at_construction(
    cls: type[Anamnesis] | type[AsyncAnamnesis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANAMNESIS_API_KEY", raising=False)
    with pytest.raises(AnamnesisError, match="API key"):
        cls("http://127.0.0.1:1")
