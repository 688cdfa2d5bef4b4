"""A message's context (the turn before it, the day, the speaker: what its lexical entry holds
besides its words) and its place in the conversation (which conversation, which turn) come
from the scope's history, not from the add call that brought it: most agents post one
exchange at a time."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import sqlalchemy as sa

from app.store.db import Database

SAID = [("Caroline", "I went to the LGBTQ support group yesterday."),
        ("Melanie", "How was it? Did you meet anyone new?"),
        ("Caroline", "It was so powerful. The transgender stories were inspiring."),
        ("Melanie", "That sounds amazing. I painted a sunrise over the lake last week."),
        ("Caroline", "Wow, which colours did you use?"),
        ("Melanie", "Mostly orange and a deep purple.")]
DAY = "2023-05-08T13:56:00Z"
QUESTIONS = ["When did Caroline go to the LGBTQ support group?",
             "What did Melanie paint?", "Which colours were in the painting?",
             "What inspired Caroline?"]


def message(name: str, text: str) -> dict[str, Any]:
    return {"role": "user", "name": name, "content": text}


async def contexts(database: Database, user_id: str) -> list[tuple[str, str | None]]:
    return [(text, context) for text, context, _, _ in await places(database, user_id)]


async def places(database: Database, user_id: str
                 ) -> list[tuple[str, str | None, uuid.UUID | None, int | None]]:
    """(text, context, conversation id, turn) of the user's messages, in the order stored."""
    async with database.engine.connect() as connection:
        rows = await connection.execute(sa.text(
            "SELECT text, context, conversation_id, turn FROM memories "
            "WHERE user_id = :user AND kind = 'message' ORDER BY id"), {"user": user_id})
        return [(text, context, conversation, turn)
                for text, context, conversation, turn in rows]


async def ranking(client: httpx.AsyncClient, user_id: str, query: str) -> list[str]:
    response = await client.post("/v1/memories/search", json={
        "query": query, "user_id": user_id, "top_k": 6})
    assert response.status_code == 200, response.text
    return [hit["memory"] for hit in response.json()["results"]]


async def test_posted_by_message_or_by_session_the_context_is_the_same(
        client: httpx.AsyncClient, database: Database) -> None:
    whole = await client.post("/v1/memories", json={
        "messages": [message(*turn) for turn in SAID], "user_id": "by-session",
        "infer": False, "observed_at": DAY})
    assert whole.status_code == 201, whole.text
    for turn in SAID:
        piece = await client.post("/v1/memories", json={
            "messages": [message(*turn)], "user_id": "by-message", "infer": False,
            "observed_at": DAY})
        assert piece.status_code == 201, piece.text

    by_session = await contexts(database, "by-session")
    assert by_session == await contexts(database, "by-message")
    for user_id in ("by-session", "by-message"):
        rows = await places(database, user_id)
        assert [turn for *_, turn in rows] == list(range(len(SAID)))
        assert len({conversation for _, _, conversation, _ in rows}) == 1
    assert by_session[2][1] == ("8 May 2023\nCaroline\n"
                                "Melanie: How was it? Did you meet anyone new?")
    for question in QUESTIONS:
        assert await ranking(client, "by-session", question) == \
            await ranking(client, "by-message", question), question


async def test_a_later_conversation_does_not_take_the_last_one_as_context(
        client: httpx.AsyncClient, database: Database) -> None:
    for user_id in ("u-later", "u-other"):
        first = await client.post("/v1/memories", json={
            "messages": [message(*SAID[0])], "user_id": user_id, "infer": False,
            "observed_at": DAY})
        assert first.status_code == 201, first.text
    days_later = await client.post("/v1/memories", json={
        "messages": [message(*SAID[1])], "user_id": "u-later", "infer": False,
        "observed_at": "2023-05-11T09:00:00Z"})
    assert days_later.status_code == 201, days_later.text
    hours_later = await client.post("/v1/memories", json={
        "messages": [message(*SAID[1])], "user_id": "u-other", "infer": False,
        "observed_at": "2023-05-08T15:00:00Z"})
    assert hours_later.status_code == 201, hours_later.text
    assert (await contexts(database, "u-later"))[1][1] == "11 May 2023\nMelanie"
    later, other = await places(database, "u-later"), await places(database, "u-other")
    assert later[1][2] != later[0][2]
    assert later[1][3] == 0
    assert other[1][2] == other[0][2]
    assert other[1][3] == 1
    assert (await contexts(database, "u-other"))[1][1] == (
        "8 May 2023\nMelanie\nCaroline: I went to the LGBTQ support group yesterday.")
