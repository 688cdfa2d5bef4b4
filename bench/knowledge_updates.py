"""The knowledge-update suite: short stories in which one fact about a person changes.

Each scenario is two or three conversations of one person with an assistant. The first
states a fact (``old``) next to an unrelated one (``kept``); a later one changes the fact (a
move, a new job, a changed preference, a correction, a temporary state that ended, a new
relationship). After all of them, ``question`` must be answered first by a current fact
holding every word of ``current``; the old fact must be superseded (kept, with ``invalid_at``),
not deleted and not still current; the unrelated fact must still be current; and no two
current facts may say the same thing. Written for this benchmark, not taken from any data
set; the words are matched lower-case, as substrings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench.managed_server import progress
from bench.memory_api import search, wait_job

DUPLICATE_SIMILARITY = 0.9


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    person: str
    episodes: tuple[tuple[str, ...], ...]  # what the person says, one conversation each
    question: str
    current: tuple[str, ...]
    old: tuple[str, ...]
    kept: tuple[str, ...]


def _s(name: str, kind: str, person: str, episodes: list[list[str]], question: str,
       current: str, old: str, kept: str) -> Scenario:
    return Scenario(name, kind, person, tuple(tuple(e) for e in episodes), question,
                    tuple(current.split()), tuple(old.split()), tuple(kept.split()))


SCENARIOS: tuple[Scenario, ...] = (
    # -- moves ---------------------------------------------------------------------------
    _s("move-city", "move", "Dana",
       [["I live in Lisbon and I work as a nurse."], ["I moved to Oslo last month!"]],
       "Where does Dana live?", "oslo", "lisbon", "nurse"),
    _s("move-country", "move", "Ravi",
       [["I'm from Chennai and I live in Canada now. I play the violin."],
        ["We finally relocated to Australia, we live in Perth now."]],
       "Where does Ravi live?", "perth", "canada", "violin"),
    _s("move-flat", "move", "Lena",
       [["My flat is on Baker Street. I have two cats."],
        ["I just moved out of Baker Street, my new place is on Elm Road."]],
       "Where is Lena's home?", "elm", "baker", "cats"),
    _s("move-dorm", "move", "Omar",
       [["I live in the student dorm at campus. I study chemistry."],
        ["I left the dorm, I share an apartment downtown with friends now."]],
       "Where does Omar live?", "downtown", "dorm", "chemistry"),
    _s("move-back", "move", "Ines",
       [["I live in Madrid. I am allergic to cats."],
        ["I moved to Seville for a while."],
        ["I'm back in Madrid again since last week."]],
       "Which city does Ines live in?", "madrid", "seville", "allergic"),
    # -- jobs ----------------------------------------------------------------------------
    _s("new-job", "job", "Tom",
       [["I work as an accountant at Deloitte. I run marathons."],
        ["I quit Deloitte, I started as a teacher at a primary school."]],
       "What is Tom's job?", "teacher", "deloitte", "marathon"),
    _s("new-employer", "job", "Priya",
       [["I'm a software engineer at Google. My husband is called Arjun."],
        ["I joined Spotify as a software engineer this month."]],
       "Where does Priya work?", "spotify", "google", "arjun"),
    _s("promotion", "job", "Ken",
       [["I am a junior designer at Ikea. I collect vinyl records."],
        ["I got promoted, I'm the lead designer at Ikea now."]],
       "What is Ken's position at Ikea?", "lead", "junior", "vinyl"),
    _s("retired", "job", "Maria",
       [["I work as a bus driver in Porto. I have three grandchildren."],
        ["I retired from driving buses last spring."]],
       "Does Maria still drive buses?", "retired", "driver", "grandchildren"),
    _s("startup", "job", "Felix",
       [["I'm a waiter at a pizzeria. I speak German and French."],
        ["I stopped waiting tables, I run my own bakery now."]],
       "What does Felix do for work?", "bakery", "waiter", "german"),
    # -- preferences ---------------------------------------------------------------------
    _s("diet", "preference", "Sara",
       [["I eat meat every day. My favourite sport is tennis."],
        ["I became a vegetarian, no more meat for me."]],
       "What is Sara's diet?", "vegetarian", "meat", "tennis"),
    _s("drink", "preference", "Jonas",
       [["I love coffee, I drink it every morning. I have a daughter named Mia."],
        ["I gave up coffee, I only drink green tea now."]],
       "What does Jonas drink in the morning?", "tea", "coffee", "mia"),
    _s("music", "preference", "Aiko",
       [["My favourite band is Coldplay. I live in Kyoto."],
        ["These days my favourite band is Radiohead, I don't like Coldplay anymore."]],
       "What is Aiko's favourite band?", "radiohead", "coldplay", "kyoto"),
    _s("sport", "preference", "Luca",
       [["I play football on weekends. I am a dentist."],
        ["I stopped football, I'm into rock climbing on weekends now."]],
       "What does Luca do on weekends?", "climbing", "football", "dentist"),
    _s("holiday", "preference", "Emma",
       [["I prefer beach holidays. My brother Noah lives in Dublin."],
        ["I changed my mind, I prefer mountain holidays now."]],
       "What kind of holidays does Emma prefer?", "mountain", "beach", "noah"),
    # -- corrections ---------------------------------------------------------------------
    _s("name-correction", "correction", "Paul",
       [["My brother's name is Tom. I have a dog called Rex."],
        ["Sorry, I misspoke earlier: my brother's name is Tim, not Tom."]],
       "What is the name of Paul's brother?", "tim", "tom", "rex"),
    _s("age-correction", "correction", "Nina",
       [["My son is 8 years old. I work as a pharmacist."],
        ["Correction: my son is 9, he had his birthday."]],
       "How old is Nina's son?", "9", "8", "pharmacist"),
    _s("date-correction", "correction", "Carlos",
       [["My wedding is on June 5. I live in Valencia."],
        ["Update: we moved the wedding to June 12."]],
       "When is Carlos's wedding?", "12", "june 5", "valencia"),
    _s("car-correction", "correction", "Olga",
       [["I drive a red Toyota. I teach yoga."],
        ["Actually my car is a blue Honda, I mixed it up."]],
       "What car does Olga drive?", "honda", "toyota", "yoga"),
    _s("school-correction", "correction", "Sam",
       [["My daughter goes to Oak Hill school. I am a firefighter."],
        ["I was wrong before, my daughter goes to Maple Grove school."]],
       "Which school does Sam's daughter attend?", "maple", "oak", "firefighter"),
    # -- temporary states ----------------------------------------------------------------
    _s("sick", "temporary", "Hana",
       [["I have the flu this week. I work at a library."],
        ["I'm healthy again, the flu is over."]],
       "Is Hana sick?", "healthy", "flu", "library"),
    _s("travel", "temporary", "Ben",
       [["I'm on a business trip in Tokyo right now. I have a son named Leo."],
        ["I'm back home from Tokyo."]],
       "Where is Ben now?", "home", "tokyo", "leo"),
    _s("injury", "temporary", "Zoe",
       [["I broke my leg, I'm on crutches. I love painting."],
        ["My leg healed, no more crutches."]],
       "Is Zoe still on crutches?", "healed", "crutches", "painting"),
    _s("unemployed", "temporary", "Mark",
       [["I'm between jobs at the moment. I have a golden retriever."],
        ["Good news, I found a job at a bank."]],
       "Is Mark working?", "bank", "between", "retriever"),
    _s("renovation", "temporary", "Julia",
       [["Our kitchen is being renovated, we eat out every night. I'm learning Spanish."],
        ["The kitchen renovation is finished, we cook at home again."]],
       "Does Julia eat out every night?", "home", "eat out", "spanish"),
    # -- relationships -------------------------------------------------------------------
    _s("engaged", "relationship", "Chris",
       [["My girlfriend is Anna. I work in construction."],
        ["Anna and I got married last Saturday!"]],
       "Is Chris married?", "married", "girlfriend", "construction"),
    _s("breakup", "relationship", "Mia",
       [["My boyfriend Jake and I go hiking a lot. I study law."],
        ["Jake and I broke up last month."]],
       "Is Mia in a relationship with Jake?", "broke", "boyfriend", "law"),
    _s("new-pet", "relationship", "Oscar",
       [["I have one cat named Luna. I work night shifts."],
        ["Luna passed away. We adopted a puppy called Max."]],
       "What pet does Oscar have?", "max", "luna", "night"),
    # -- counts and plans ----------------------------------------------------------------
    _s("kids", "count", "Eva",
       [["I have two children. I live near the sea."],
        ["We had a baby last week, so now I have three children."]],
       "How many children does Eva have?", "three", "two", "sea"),
    _s("plan-change", "plan", "Ali",
       [["I plan to study medicine next year. I play chess."],
        ["I changed my plans, I will study architecture instead of medicine."]],
       "What does Ali plan to study?", "architecture", "medicine", "chess"),
    _s("phone", "possession", "Greta",
       [["I use an iPhone. I ride my bike to work."],
        ["I switched to an Android phone."]],
       "What phone does Greta use?", "android", "iphone", "bike"),
)

assert len(SCENARIOS) >= 30


# -- running it ------------------------------------------------------------------------------


def _holds(text: str, words: tuple[str, ...]) -> bool:
    lowered = text.lower()
    return all(word in lowered for word in words)


async def facts_of(client: httpx.AsyncClient, user_id: str,
                   include_superseded: bool = False) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"user_id": user_id, "kind": "fact", "limit": 1000}
    if include_superseded:
        params["include_superseded"] = "true"
    found: list[dict[str, Any]] = (await client.get("/v1/memories", params=params)).json()[
        "results"]
    return found


async def scenario(client: httpx.AsyncClient, case: Scenario,
                   timeout_s: float) -> dict[str, Any]:
    user_id = f"ku-{case.name}-{uuid.uuid4().hex[:6]}"
    day = dt.datetime(2025, 1, 6, 18, 0, tzinfo=dt.UTC)
    jobs = []
    kept_at_first = False
    for number, said in enumerate(case.episodes):
        messages: list[dict[str, Any]] = []
        for text in said:
            messages += [{"role": "user", "name": case.person, "content": text},
                         {"role": "assistant", "content": "Thanks for telling me."}]
        response = await client.post("/v1/memories", json={
            "messages": messages, "user_id": user_id,
            "observed_at": (day + dt.timedelta(days=30 * number)).isoformat()})
        response.raise_for_status()
        jobs.append(await wait_job(client, response.json()["job_id"], timeout_s))
        if number == 0:
            kept_at_first = any(_holds(f["memory"], case.kept)
                                for f in await facts_of(client, user_id))
    current = await facts_of(client, user_id)
    every = await facts_of(client, user_id, include_superseded=True)
    hits = await search(client, case.question, user_id, 3, {"kind": "fact"})
    old_rows = [f for f in every if _holds(f["memory"], case.old)
                and not _holds(f["memory"], case.current)]
    duplicates = 0
    for fact in current:
        similar = await search(client, fact["memory"], user_id, 2, {"kind": "fact"})
        duplicates += sum(1 for hit in similar if hit["id"] != fact["id"]
                          and hit["similarity"] >= DUPLICATE_SIMILARITY)
    return {
        "name": case.name, "kind": case.kind,
        "jobs": [job["status"] for job in jobs],
        "current_first": bool(hits) and _holds(hits[0]["memory"], case.current),
        "top_fact": hits[0]["memory"] if hits else None,
        "old": ("superseded" if old_rows and all(f["invalid_at"] for f in old_rows)
                else "still_current" if old_rows else "never_stored"),
        "kept_extracted": kept_at_first,
        "wrongly_destroyed": kept_at_first and not any(_holds(f["memory"], case.kept)
                                                       for f in current),
        "duplicates": duplicates // 2,
        "current_facts": [f["memory"] for f in current],
        "events": [[f"{r['event']}: {r['memory']}" for r in job["results"]] for job in jobs],
    }


async def updates(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, Any]:
    results = []
    cases = [case for case in SCENARIOS if case.name in args.scenario] if args.scenario \
        else SCENARIOS[:args.scenarios]
    for number, case in enumerate(cases, 1):
        result = await scenario(client, case, args.job_timeout)
        results.append(result)
        progress(f"{case.name} ({number}/{len(cases)}): current first "
                 f"{result['current_first']}, old {result['old']}, destroyed "
                 f"{result['wrongly_destroyed']}")
    count = max(1, len(results))
    return {
        "scenarios": len(results),
        "current_first_rate": round(sum(r["current_first"] for r in results) / count, 3),
        "old_superseded_rate": round(sum(r["old"] == "superseded" for r in results) / count, 3),
        "old_still_current": sum(r["old"] == "still_current" for r in results),
        "wrongly_destroyed": sum(r["wrongly_destroyed"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "jobs_failed": sum(status != "SUCCEEDED" for r in results for status in r["jobs"]),
        "by_kind": {kind: round(statistics.fmean(r["current_first"] for r in results
                                                 if r["kind"] == kind), 3)
                    for kind in sorted({r["kind"] for r in results})},
        "results": results,
    }
