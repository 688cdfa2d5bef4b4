"""Consolidating one episode into memories, top to bottom.

``consolidate_episode`` is the work a job does (``app.jobs.runner`` claims the job, keeps its
heartbeat and settles it):

1. *context*  the episode, the scope's previous episodes and the extraction instructions;
2. *extract*  one LLM call: facts with their source messages and the day they became true;
3. *resolve*  nearest current memories of the scope: ADD / UPDATE / SUPERSEDE / NOOP per
   fact, decided in code where the answer to the LLM question below cannot change it;
4. *write*    one transaction: memories, history events, sources, and the results on the
   job. From here the facts are searchable, while the job still runs; then one LLM call
   asks which close memories the facts end, and a second transaction retires them and
   writes the few facts held for the answer (``resolve.settle``);
5. *graph*    one more LLM call lists entities and relations; a fact whose exclusive relation
   (lives_in, works_at) replaces a current one in the graph supersedes that relation's
   memory (``write.supersede_added``); the extraction is stored and applied to the graph
   store (``replay.apply_extraction``), and only then is the job SUCCEEDED.

The graph comes last because it is a projection of the facts: on the bundled model on two
cores its call is a third of an episode's time, and nothing a search needs waits for it.
Steps 3 to 5 run under the scope's lock, so two episodes of one scope never decide
against the same memories at once; steps 1 and 2 only read the episode itself and run in
parallel with anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.consolidate import graph, replay
from app.consolidate.context import EpisodeContext, load_context
from app.consolidate.extract import ExtractedFact, extract
from app.consolidate.prompts import GRAPH_VERSION, ExtractedGraph
from app.consolidate.resolve import Plan, replaced_memories, resolve, settle
from app.consolidate.write import supersede_added, write
from app.errors import LLMError, LLMOutputError, LLMRequestRejected
from app.llm import Completion, LLMClient, Usage
from app.resources import Resources
from app.store.models import Job
from app.store.repositories import episodes, jobs
from app.store.repositories import graph as graph_records
from app.store.repositories.history import Cause

logger = logging.getLogger(__name__)


class LostLease(Exception):
    """Another run took the job over (this one's heartbeat lapsed); this run's work is void."""


@dataclass
class Ledger:
    """What the job's LLM calls cost, failed ones included. ``calls`` counts the replies
    received (each a billed completion), re-asks included."""

    usage: Usage = field(default_factory=Usage)
    calls: int = 0
    truncated: int = 0  # replies cut at max_tokens
    model: str | None = None
    prompt_versions: list[str] = field(default_factory=list)

    def record(self, *completions: Completion[Any] | None) -> None:
        for completion in completions:
            if completion is None:
                continue
            self.usage += completion.usage
            self.calls += completion.attempts
            self.truncated += completion.truncated
            self.model = completion.model
            if completion.prompt_version and \
                    completion.prompt_version not in self.prompt_versions:
                self.prompt_versions.append(completion.prompt_version)

    def record_failure(self, error: LLMError) -> None:
        self.usage += Usage(error.prompt_tokens, error.completion_tokens)
        self.calls += error.replies
        self.truncated += error.truncated

    async def charge(self, session: AsyncSession, job: Job) -> None:
        """Adds what was spent to the job's counts."""
        await jobs.add_usage(session, job.id, model=self.model, calls=self.calls,
                             prompt_tokens=self.usage.prompt_tokens,
                             completion_tokens=self.usage.completion_tokens,
                             truncated=self.truncated)


async def consolidate_episode(resources: Resources, job: Job, ledger: Ledger) -> None:
    config = resources.settings.consolidation
    database, embedder = resources.database, resources.embedder
    async with database.session_scope() as session:
        episode = await episodes.get(session, job.project_id, job.episode_id)
        if episode is None:
            raise LookupError(f"episode {job.episode_id} of job {job.id} is gone")
        context = await load_context(session, episode, config.context_episodes)
    llm = await resources.llm.client()
    extraction = await extract(llm, context, config.max_facts)
    facts = extraction.facts
    ledger.record(*extraction.completions)
    for failure in extraction.failures:
        ledger.record_failure(failure)
    vectors = await embedder.embed([fact.text for fact in facts]) if facts else []
    graph_step = bool(facts) and config.extract_graph
    async with jobs.scope_lock(database.engine, context.project_id, context.scope):
        async with database.session_scope() as session:
            resolution = await resolve(session, embedder, context, facts, vectors,
                                       config.candidates_per_fact)
        # What code decided alone is written first: searchable while the model is asked.
        plans = dict(resolution.plans)
        async with database.session_scope() as session:
            written = await _write(session, job, context, plans, _cause(context, job, ledger))
            if not graph_step and not resolution.asked:
                return await _succeed(session, job, facts, list(written.values()), ledger)
            await jobs.record_results(session, job.id, [written[i] for i in sorted(written)])
        settlement = await settle(llm, context, resolution)
        if settlement is not None:
            ledger.record(settlement.completion)
            plans |= settlement.plans
            cause = _cause(context, job, ledger)
            async with database.session_scope() as session:
                written |= await _write(session, job, context, settlement.plans, cause)
                results = await supersede_added(
                    session, context, [plans[i] for i in range(len(facts))],
                    [written[i] for i in range(len(facts))], settlement.retired, cause)
                if not graph_step:
                    return await _succeed(session, job, facts, results, ledger)
                await jobs.record_results(session, job.id, results)
                written = dict(enumerate(results))
        cause = _cause(context, job, ledger)
        results = [written[i] for i in range(len(facts))]
        ordered = [plans[i] for i in range(len(facts))]
        entities = await _extract_graph(llm, context, facts, ledger)
        recorded = None
        async with database.session_scope() as session:
            if not await jobs.still_ours(session, job):
                raise LostLease(str(job.id))
            if entities is not None:
                replaced = await graph.replaced_by_relations(
                    resources.graph, context.scope.within(context.project_id), entities,
                    len(facts))
                targets = await replaced_memories(session, embedder, context, ordered,
                                                  results, replaced)
                results = await supersede_added(session, context, ordered, results, targets,
                                                cause)
                recorded = await graph_records.add_extraction(
                    session, context.project_id, context.scope, episode_id=context.episode_id,
                    job_id=job.id, payload=graph.payload(entities, facts, results),
                    observed_at=context.observed_at)
            await ledger.charge(session, job)
            if recorded is None:
                await jobs.succeed(session, job.id, results)
        if recorded is not None:
            # SUCCEEDED only once the graph shows the episode too, so a client that waited
            # for the job reads a graph that agrees with its memories.
            await replay.apply_extraction(database, resources.graph, embedder, recorded)
            async with database.session_scope() as session:
                await jobs.succeed(session, job.id, results)
    _finished(job, facts, results, ledger)


async def _write(session: AsyncSession, job: Job, context: EpisodeContext,
                 plans: dict[int, Plan], cause: Cause) -> dict[int, dict[str, Any]]:
    """``plans`` (by fact number) written, if the job is still this run's; what was done
    with each fact, by number."""
    if not await jobs.still_ours(session, job):
        raise LostLease(str(job.id))
    numbers = sorted(plans)
    return dict(zip(numbers, await write(session, context, [plans[i] for i in numbers], cause),
                    strict=True))


def _cause(context: EpisodeContext, job: Job, ledger: Ledger) -> Cause:
    """What history records as the cause of a change: the episode, the job and the prompts
    that decided it so far (the graph's aside: it only retires what a fact states)."""
    return Cause(episode_id=context.episode_id, job_id=job.id, model=ledger.model,
                 prompt_version="+".join(v for v in ledger.prompt_versions
                                         if v != GRAPH_VERSION) or None)


async def _succeed(session: AsyncSession, job: Job, facts: list[ExtractedFact],
                   results: list[dict[str, Any]], ledger: Ledger) -> None:
    await ledger.charge(session, job)
    await jobs.succeed(session, job.id, results)
    _finished(job, facts, results, ledger)


def _finished(job: Job, facts: list[ExtractedFact], results: list[dict[str, Any]],
              ledger: Ledger) -> None:
    logger.info("job %s: %d facts → %s (%d LLM calls, %d tokens)", job.id, len(facts),
                _summary(results), ledger.calls, ledger.usage.total_tokens)


# -- helpers -----------------------------------------------------------------------------


async def _extract_graph(llm: LLMClient, context: EpisodeContext,
                         facts: list[ExtractedFact], ledger: Ledger) -> ExtractedGraph | None:
    """The graph is a projection: when the model cannot produce it, the memories still
    count and the episode goes without entities (logged)."""
    try:
        completion = await graph.extract_graph(llm, context, facts)
    except (LLMOutputError, LLMRequestRejected) as exc:
        ledger.record_failure(exc)
        logger.warning("episode %s: no graph extracted (%s)", context.episode_id, exc)
        return None
    ledger.record(completion)
    return graph.without_example_names(completion.value, facts)


def _summary(results: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["event"]] = counts.get(result["event"], 0) + 1
    return ", ".join(f"{event} {count}" for event, count in sorted(counts.items())) or "nothing"
