"""The extraction step's own work, on the scripted LLM through the API: the transcript names
speakers, time words become days in code, long episodes are read in windows with bounded
replies, and citations are held to the messages that say the fact."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from app.consolidate.dates import resolve_when
from app.consolidate.extract import TOKENS_PER_TURN, WINDOW_TURNS, ExtractedFact, merge
from app.domain import content_hash
from tests.consolidate.scripted_brain import Brain, FactSpec
from tests.consolidate.test_consolidation_api import memories
from tests.scripted_llm import Reply, ScriptedLLM

OBSERVED = "2025-05-10T12:00:00+00:00"


def extraction_prompts(scripted_llm: ScriptedLLM) -> list[dict[str, Any]]:
    return [r.body for r in scripted_llm.requests
            if r.body["response_format"]["json_schema"]["name"] == "ExtractedFacts"]


async def add(client: httpx.AsyncClient, messages: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/memories", json={
        "messages": messages, "user_id": "u1", "observed_at": OBSERVED, "wait": True})
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "SUCCEEDED", job["error"]
    return job


@pytest.mark.parametrize(("said", "day"), [
    ("yesterday", date(2025, 5, 9)),
    ("last March", date(2025, 3, 1)),
    ("last May", date(2024, 5, 1)),
    ("two weeks ago", date(2025, 4, 26)),
    ("in 2019", date(2019, 1, 1)),
    ("since 2015", date(2015, 1, 1)),
    ("last summer", date(2024, 6, 1)),
    ("on 7 May 2025", date(2025, 5, 7)),
    ("2024-02-20", date(2024, 2, 20)),
    ("tomorrow", None),  # not yet true
    ("next month", None),
    ("recently", None),  # names no day
    (None, None),
])
def test_time_words_become_days(said: str | None, day: date | None) -> None:
    assert resolve_when(said, datetime(2025, 5, 10, 12, tzinfo=UTC)) == day


async def test_time_words_are_resolved_against_the_conversation(
        client: httpx.AsyncClient, brain: Brain) -> None:
    brain.facts = {"I moved to Oslo last March.": [FactSpec("Dana lives in Oslo", "last March")],
                   "I fly to Rome tomorrow.": [FactSpec("Dana flies to Rome", "tomorrow")],
                   "I love jazz.": [FactSpec("Dana loves jazz")]}
    await add(client, [{"role": "user", "content": text, "name": "Dana"}
                       for text in brain.facts])
    valid = {m["memory"]: m["valid_at"] for m in await memories(client, user_id="u1")}
    assert valid["Dana lives in Oslo"].startswith("2025-03-01")
    assert valid["Dana flies to Rome"].startswith("2025-05-10T12:00")  # future: from now
    assert valid["Dana loves jazz"].startswith("2025-05-10T12:00")


async def test_the_transcript_names_every_speaker(client: httpx.AsyncClient, brain: Brain,
                                                  scripted_llm: ScriptedLLM) -> None:
    brain.facts = {"I'm Dana, I live in Oslo.": ["Dana lives in Oslo"]}
    await add(client, [
        {"role": "user", "content": "I'm Dana, I live in Oslo.", "name": "Dana"},
        {"role": "assistant", "content": "Nice,  Oslo is lovely."},
        {"role": "user", "content": "Thanks."},
    ])
    [body] = extraction_prompts(scripted_llm)
    prompt = body["messages"][-1]["content"]
    assert "[0] Dana: I'm Dana, I live in Oslo.\n" in prompt
    assert "[1] Assistant: Nice, Oslo is lovely.\n" in prompt
    assert "[2] User: Thanks." in prompt
    assert "Maya" in body["messages"][0]["content"]  # the worked example rides along


async def test_a_long_episode_is_read_in_windows(client: httpx.AsyncClient, brain: Brain,
                                                 scripted_llm: ScriptedLLM) -> None:
    said = [f"Line {n}: I once visited city number {n}." for n in range(30)]
    brain.facts = {said[3]: ["Dana visited city 3"], said[25]: ["Dana visited city 25"]}
    job = await add(client, [{"role": "user", "content": text, "name": "Dana"}
                             for text in said])
    bodies = extraction_prompts(scripted_llm)
    sizes = [sum(line.startswith("[") for line in b["messages"][-1]["content"].splitlines())
             for b in bodies]
    assert sizes == [WINDOW_TURNS, WINDOW_TURNS, 30 - 2 * WINDOW_TURNS]
    assert [b["max_tokens"] for b in bodies] == [max(160, TOKENS_PER_TURN * n) for n in sizes]
    second = bodies[1]["messages"][-1]["content"]
    assert f"Said before (context only, do not extract):\nDana: {said[10]}" in second
    assert f"[{WINDOW_TURNS}] Dana: {said[WINDOW_TURNS]}" in second
    assert job["usage"]["llm_calls"] == 3 + 1  # three windows and the graph
    [late] = [m for m in await memories(client, user_id="u1")
              if m["memory"] == "Dana visited city 25"]
    detail = (await client.get(f"/v1/memories/{late['id']}")).json()
    assert detail["sources"][0]["message_indices"] == [25]


async def test_citations_are_held_to_the_messages_that_say_the_fact(
        client: httpx.AsyncClient, brain: Brain, scripted_llm: ScriptedLLM) -> None:
    messages = [{"role": "user", "content": "Hi there!", "name": "Dana"},
                {"role": "assistant", "content": "Hello Dana, what's new?"},
                {"role": "user", "content": "My sister Ines still lives in Lisbon.",
                 "name": "Dana"},
                {"role": "user", "content": "And I adopted a cat.", "name": "Dana"}]
    replies = {"Ines lives in Lisbon.": [0, 1, 3],  # cites everything but the right one
               "Dana has a cat.": [0],  # cites the wrong message
               "Dana is friendly.": [1]}  # shares no word with any message

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["response_format"]["json_schema"]["name"] == "ExtractedFacts":
            return {"facts": [{"text": text, "source_messages": cited, "when": None,
                               "type": "state"}
                              for text, cited in replies.items()]}
        return brain(body)

    scripted_llm.responder = answer
    await add(client, messages)
    cited = {}
    for memory in await memories(client, user_id="u1"):
        detail = (await client.get(f"/v1/memories/{memory['id']}")).json()
        cited[memory["memory"]] = detail["sources"][0]["message_indices"]
    assert cited == {"Ines lives in Lisbon.": [2], "Dana has a cat.": [3],
                     "Dana is friendly.": [1]}



async def test_a_window_that_runs_away_twice_is_split_in_two(
        client: httpx.AsyncClient, brain: Brain, scripted_llm: ScriptedLLM) -> None:
    """The model derails on one long message: the whole window runs away, and so does its
    re-ask; each half is then asked alone, and only the derailing half runs away again until
    it is the one message. Here that message is read fine alone, and the job succeeds with
    every fact, each runaway reply counted once."""
    said = [f"Note {n}: I have a pet number {n}." for n in range(4)]
    said[1] = "Note 1: " + "I like lists of many things. " * 20
    brain.facts = {said[0]: ["Dana has pet 0"], said[1]: ["Dana likes lists"],
                   said[2]: ["Dana has pet 2"], said[3]: ["Dana has pet 3"]}

    def answer(body: dict[str, Any]) -> Reply | dict[str, Any]:
        if body["response_format"]["json_schema"]["name"] == "ExtractedFacts":
            window = body["messages"][1]["content"].split("Conversation:\n", 1)[1]
            if window.count("\n[") >= 1 and "I like lists" in window:  # more than one message
                brain.extract_calls += 1
                return Reply(content='{"facts": [{"text": "Dana likes', finish_reason="length")
        return brain(body)

    scripted_llm.responder = answer
    job = await add(client, [{"role": "user", "content": text, "name": "Dana"}
                             for text in said])
    assert job["status"] == "SUCCEEDED", job["error"]
    assert {m["memory"] for m in await memories(client, user_id="u1")} == {
        "Dana has pet 0", "Dana likes lists", "Dana has pet 2", "Dana has pet 3"}
    sizes = [sum(line.startswith("[") for line in b["messages"][1]["content"].splitlines())
             for b in extraction_prompts(scripted_llm)]
    # [0-3] twice, [0-1] twice, [0], [1], [2-3]
    assert sizes == [4, 4, 2, 2, 1, 1, 2]
    assert job["usage"]["truncated_replies"] == 4
    assert job["usage"]["llm_calls"] == 7 + 1  # and the graph


async def test_facts_copied_from_the_context_are_dropped(
        client: httpx.AsyncClient, brain: Brain, scripted_llm: ScriptedLLM) -> None:
    """The episode before, an hour earlier, is shown as context; a small model extracts
    from it again. What only the context says is not stored twice (nor cited to the new
    messages); a conversation two days later is read without that context."""
    brain.facts = {"I work at Google.": ["Priya works at Google"],
                   "I joined Spotify!": ["Priya joined Spotify."]}

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"][1]["content"]
        if body["response_format"]["json_schema"]["name"] == "ExtractedFacts" \
                and "Said before" in prompt:
            return {"facts": [{"text": "Priya works at Google.", "source_messages": [0],
                               "when": None, "type": "state"},
                              {"text": "Priya joined Spotify.", "source_messages": [0],
                               "when": None, "type": "state"}]}
        return brain(body)

    scripted_llm.responder = answer
    for text, at in (("I work at Google.", "2025-05-10T12:00:00+00:00"),
                     ("I joined Spotify.", "2025-05-10T13:00:00+00:00"),
                     ("I joined Spotify!", "2025-05-12T13:00:00+00:00")):
        response = await client.post("/v1/memories", json={
            "messages": [{"role": "user", "content": text, "name": "Priya"}],
            "user_id": "u1", "observed_at": at, "wait": True})
        assert response.json()["status"] == "SUCCEEDED"
    prompts = [b["messages"][1]["content"] for b in extraction_prompts(scripted_llm)]
    assert "Said before (context only, do not extract):\nPriya: I work at Google." in prompts[1]
    assert "Said before" not in prompts[2]
    google = [m for m in await memories(client, user_id="u1")
              if m["memory"] == "Priya works at Google"]
    detail = (await client.get(f"/v1/memories/{google[0]['id']}")).json()
    assert len(detail["sources"]) == 1  # told once, not confirmed by the next episode
    assert "Priya joined Spotify." in {m["memory"] for m in
                                       await memories(client, user_id="u1")}


async def test_a_message_that_runs_away_alone_fails_the_job_charged_for_every_call(
        client: httpx.AsyncClient, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.responder = lambda body: Reply(content='{"facts": [{"text": "Dana',
                                                finish_reason="length")
    response = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "I like lists.", "name": "Dana"},
                     {"role": "user", "content": "Many lists.", "name": "Dana"}],
        "user_id": "u1", "observed_at": OBSERVED, "wait": True})
    job = response.json()
    assert (job["status"], job["error"]["code"]) == ("FAILED", "llm_bad_output")
    # Both messages and their re-ask, then the first alone and its re-ask.
    assert (job["usage"]["llm_calls"], job["usage"]["truncated_replies"]) == (4, 4)
    assert len(extraction_prompts(scripted_llm)) == 4
    found = await client.post("/v1/memories/search", json={"query": "lists", "user_id": "u1"})
    assert {hit["memory"] for hit in found.json()["results"]} == {"I like lists.", "Many lists."}


async def test_facts_about_an_unnamed_assistant_are_not_kept(
        client: httpx.AsyncClient, scripted_llm: ScriptedLLM, brain: Brain) -> None:
    """The agent's own "Thanks for telling me" is no fact about anyone; a named assistant
    (a person in the chat, as in LoCoMo) is."""
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["response_format"]["json_schema"]["name"] == "ExtractedFacts":
            prompt = body["messages"][1]["content"]
            agent = "Assistant" if "Assistant:" in prompt else "Melanie"
            return {"facts": [{"text": "Hana is healthy again.", "source_messages": [0],
                               "when": None, "type": "state"},
                              {"text": f"{agent} thanks Hana.", "source_messages": [1],
                               "when": None, "type": "state"},
                              {"text": f"{agent}'s reply was kind.", "source_messages": [1],
                               "when": None, "type": "state"}]}
        return brain(body)

    scripted_llm.responder = answer
    for user, name in (("u1", None), ("u2", "Melanie")):
        assistant = {"role": "assistant", "content": "Thanks for telling me."}
        if name:
            assistant["name"] = name
        response = await client.post("/v1/memories", json={
            "messages": [{"role": "user", "content": "I'm healthy again.", "name": "Hana"},
                         assistant], "user_id": user, "observed_at": OBSERVED, "wait": True})
        assert response.json()["status"] == "SUCCEEDED"
    assert {m["memory"] for m in await memories(client, user_id="u1")} == {
        "Hana is healthy again."}
    assert {m["memory"] for m in await memories(client, user_id="u2")} == {
        "Hana is healthy again.", "Melanie thanks Hana.", "Melanie's reply was kind."}


def test_a_fact_told_in_two_windows_is_a_state_when_either_says_so() -> None:
    """Merged repeats stay open to change if any telling calls them a state: a wrong
    "event" only costs a question, a wrong "state"'s absence a missed change."""
    text = "Dana drives a red Toyota."
    event = ExtractedFact(text, content_hash(text), (0,), datetime(2024, 5, 1, tzinfo=UTC),
                          False, lasting=False)
    [merged] = merge([event, replace(event, message_indices=(14,), lasting=True)], 10)
    assert (merged.message_indices, merged.lasting) == ((0, 14), True)
    [merged] = merge([event, replace(event, message_indices=(14,))], 10)
    assert (merged.message_indices, merged.lasting) == ((0, 14), False)


async def test_names_copied_from_the_worked_example_are_dropped(
        client: httpx.AsyncClient, scripted_llm: ScriptedLLM, brain: Brain) -> None:
    """A small model writes the example's "Siemens" into a fact and an entity of a chat that
    never says it: neither is kept. Where the chat says it, both are."""
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["response_format"]["json_schema"]["name"] == "ExtractedFacts":
            return {"facts": [{"text": "Caroline went to a support group.",
                               "source_messages": [0], "when": None, "type": "event"},
                              {"text": "Caroline found support at Siemens.",
                               "source_messages": [0], "when": None, "type": "event"}]}
        return brain(body)

    brain.graph = lambda facts: {
        "entities": [{"name": "Caroline", "type": "person", "summary": "a friend"},
                     {"name": "Siemens", "type": "organization", "summary": "company"}],
        "relations": [{"source": "Caroline", "relation": "works_at", "target": "Siemens",
                       "fact": 1, "exclusive": True}]}
    scripted_llm.responder = answer
    for user, said in (("u1", "I went to a support group."),
                       ("u2", "I went to a support group the Siemens works council runs.")):
        response = await client.post("/v1/memories", json={
            "messages": [{"role": "user", "content": said, "name": "Caroline"}],
            "user_id": user, "observed_at": OBSERVED, "wait": True})
        assert response.json()["status"] == "SUCCEEDED"
    entities = {user: {e["name"] for e in (await client.get(
        "/v1/entities", params={"user_id": user})).json()["results"]} for user in ("u1", "u2")}
    assert {m["memory"] for m in await memories(client, user_id="u1")} == {
        "Caroline went to a support group."}
    assert entities["u1"] == {"Caroline"}
    assert {m["memory"] for m in await memories(client, user_id="u2")} == {
        "Caroline went to a support group.", "Caroline found support at Siemens."}
    assert entities["u2"] == {"Caroline", "Siemens"}
