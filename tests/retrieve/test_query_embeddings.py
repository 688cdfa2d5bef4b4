"""Concurrent searches share the query embedding's forward pass (within the window, up to a
batch's size) and each still gets the vector it would have got alone."""

import asyncio
import uuid

import numpy as np

from app.embeddings import SentenceTransformerEmbedder
from app.index.switch import SwitchingEmbedder
from app.retrieve.query_embeddings import QueryEmbeddings

QUESTIONS = [f"What did {name} say about {topic}?" for name, topic in zip(
    ["Ana", "Ben", "Caro", "Dev", "Eli", "Fay", "Gus", "Hal"],
    ["tea", "trains", "tulips", "tax", "tennis", "tides", "tango", "toast"], strict=True)]


def own_batcher(embedder: SentenceTransformerEmbedder) -> SentenceTransformerEmbedder:
    """The session's model behind a batcher (and pass count) of this test's own."""
    return SentenceTransformerEmbedder(encoder=embedder.encoder, model_name=embedder.model_name)


async def ask(queries: QueryEmbeddings, project: uuid.UUID, questions: list[str],
              spacing_s: float) -> list[np.ndarray]:
    async def one(position: int, question: str) -> np.ndarray:
        await asyncio.sleep(position * spacing_s)  # arriving one after another
        return await queries.get(project, question)

    return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(questions))))


async def test_queries_within_the_window_share_one_forward_pass(
        embedder: SentenceTransformerEmbedder) -> None:
    model = own_batcher(embedder)
    queries = QueryEmbeddings(model, size=0, window_s=0.2)
    vectors = await ask(queries, uuid.uuid4(), QUESTIONS, spacing_s=0.005)
    assert (queries.batches, model.passes) == (1, 1)
    for question, vector in zip(QUESTIONS, vectors, strict=True):
        alone = np.asarray(embedder.encode_sync([question])[0], dtype=np.float32)
        assert vector.shape == (384,)
        assert np.allclose(vector, alone, atol=1e-5)
    await model.aclose()


async def test_without_a_window_each_query_goes_at_once(
        embedder: SentenceTransformerEmbedder) -> None:
    model = own_batcher(embedder)
    queries = QueryEmbeddings(model, size=0, window_s=0.0)
    await ask(queries, uuid.uuid4(), QUESTIONS[:3], spacing_s=0.3)
    assert (queries.batches, model.passes) == (3, 3)
    await model.aclose()


async def test_a_full_batch_goes_before_the_window_ends(
        embedder: SentenceTransformerEmbedder) -> None:
    model = own_batcher(embedder)
    queries = QueryEmbeddings(model, size=0, window_s=30.0, max_batch=4)
    vectors = await asyncio.wait_for(ask(queries, uuid.uuid4(), QUESTIONS, spacing_s=0), 20)
    assert queries.batches == 2
    for question, vector in zip(QUESTIONS, vectors, strict=True):
        assert np.allclose(vector, embedder.encode_sync([question])[0], atol=1e-5)
    await model.aclose()


async def test_one_projects_repeated_question_is_embedded_once_and_cached(
        embedder: SentenceTransformerEmbedder) -> None:
    model = own_batcher(embedder)
    queries = QueryEmbeddings(model, size=16, window_s=0.05)
    project, other = uuid.uuid4(), uuid.uuid4()
    first, again, elsewhere = await asyncio.gather(
        queries.get(project, QUESTIONS[0]), queries.get(project, QUESTIONS[0]),
        queries.get(other, QUESTIONS[0]))
    assert first is again
    assert np.array_equal(first, elsewhere)
    assert (queries.batches, queries.misses, queries.hits) == (1, 3, 0)
    assert await queries.get(project, QUESTIONS[0]) is first
    assert (queries.batches, queries.hits) == (1, 1)
    await model.aclose()


async def test_a_model_switch_during_the_call_gives_the_new_models_vector(
        embedder: SentenceTransformerEmbedder) -> None:
    """A search must not take one model's vector to an index of the other's: the vector
    comes with the model that made it, embedded again when a switch raced the call."""
    old, new = own_batcher(embedder), SentenceTransformerEmbedder(
        encoder=embedder.encoder, model_name="another-model")
    switching = SwitchingEmbedder(old)
    embed_with_old = old.embed

    async def switched_meanwhile(texts: list[str]) -> list[list[float]]:
        vectors = await embed_with_old(texts)
        switching.current = new  # the process moved while this call ran
        return vectors

    old.embed = switched_meanwhile  # type: ignore[method-assign]
    queries = QueryEmbeddings(switching, size=8)
    vector, model = await queries.made(uuid.uuid4(), QUESTIONS[0])
    assert model == "another-model"
    assert (old.passes, new.passes) == (1, 1)
    assert np.allclose(vector, embedder.encode_sync([QUESTIONS[0]])[0], atol=1e-5)
    await old.aclose()
    await new.aclose()
