"""HTTP load benchmark: add throughput and search latency of a running Anamnesis server.

For each ``--n`` it loads N synthetic memories (``infer=false``) spread over ten users, then
times searches scoped to one user: one client at a time, then ``--concurrency`` clients, each
with and without a metadata filter. Prints one JSON document on stdout; progress goes to stderr.

Without ``--base-url`` it starts its own server on a free port with a fresh data directory
(the embedded Postgres), gives every N its own project key, and stops the server at the end.
See bench/README.md for the fields.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
USERS_PER_RUN = 10
WARMUP_QUERIES = 10
FILTER_TOPIC = "food"
MAX_ERROR_SAMPLES = 5

# -- synthetic corpus ---------------------------------------------------------------------------

PEOPLE = [
    "Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Priya", "Lucas", "Sofia", "Daniel",
    "Mei", "Jonas", "Fatima", "Carlos", "Hannah", "Ivan", "Chloe", "Mateo", "Yuki", "Noah",
    "Amara", "Felix", "Ingrid", "Rahul", "Elena", "Samuel", "Zara", "Pedro", "Nadia", "Oliver",
    "Leila", "Marco", "Grace", "Tariq", "Anya", "Ben", "Rosa", "Hugo", "Sana", "Emil",
]
CITIES = [
    "Lisbon", "Tokyo", "Nairobi", "Berlin", "Montreal", "Buenos Aires", "Seoul", "Oslo",
    "Marrakesh", "Austin", "Hanoi", "Edinburgh", "Cape Town", "Lima", "Kraków", "Melbourne",
    "Istanbul", "Vancouver", "Bologna", "Reykjavik", "Mumbai", "Copenhagen", "Porto",
    "Mexico City", "Tbilisi", "Kyoto", "Dublin", "Valencia", "Santiago", "Helsinki",
]
LANDMARKS = [
    "old harbour", "central station", "botanical garden", "cathedral", "night market",
    "riverside park", "university", "art museum", "fish market", "castle",
]
FOODS = [
    "ramen", "paella", "pho", "tacos al pastor", "shakshuka", "pad thai", "sushi", "lasagne",
    "falafel", "bibimbap", "ceviche", "pierogi", "butter chicken", "moussaka", "dumplings",
    "risotto", "jollof rice", "goulash", "empanadas", "laksa", "pastel de nata", "tiramisu",
    "peanuts", "shellfish", "gluten", "dark chocolate", "blue cheese", "mushrooms", "avocado",
    "oat milk",
]
CUISINES = [
    "Thai", "Peruvian", "Ethiopian", "Japanese", "Georgian", "Lebanese", "Mexican", "Korean",
    "Vietnamese", "Italian", "Indian", "Portuguese", "Moroccan", "Turkish", "Basque",
]
ACTIVITIES = [
    "hiking", "bouldering", "sailing", "kayaking", "cycling", "swimming", "rowing", "climbing",
    "trail running", "birdwatching", "skiing", "surfing", "snowboarding", "paddleboarding",
    "horse riding",
]
INSTRUMENTS = ["piano", "cello", "guitar", "violin", "drums", "saxophone", "ukulele", "flute"]
AUTHORS = [
    "Ursula K. Le Guin", "Toni Morrison", "Haruki Murakami", "Chimamanda Ngozi Adichie",
    "Italo Calvino", "Octavia Butler", "Kazuo Ishiguro", "Jorge Luis Borges", "Mary Beard",
    "Oliver Sacks",
]
SUBJECTS = [
    "memory", "the ocean", "Roman history", "migration", "artificial intelligence", "grief",
    "mountains", "cities", "language", "friendship",
]
COMPANIES = [
    "Northwind", "Globex", "Initech", "Umbrella Labs", "Hooli", "Stark Logistics", "Acme Bio",
    "Blue Harbor", "Vandelay Imports", "Pied Piper",
]
PROJECTS = [
    "Atlas", "Nimbus", "Orion", "Beacon", "Falcon", "Harbor", "Quartz", "Sequoia", "Tundra",
    "Zephyr",
]
ROLES = [
    "data engineer", "product manager", "site reliability engineer", "designer",
    "research scientist", "team lead", "support engineer", "backend developer",
]
RELATIVES = ["sister", "brother", "cousin", "aunt", "uncle", "grandmother", "father", "mother"]
PETS = ["dog", "cat", "rabbit", "parrot"]
PET_NAMES = ["Biscuit", "Luna", "Pixel", "Mochi", "Rufus", "Nala", "Pepper", "Ziggy"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SEASONS = ["spring", "summer", "autumn", "winter"]

MEMORY_TEMPLATES: dict[str, list[str]] = {
    "food": [
        "I had {food} with {person} at a {cuisine} place in {city} {past}.",
        "{person} is allergic to {food}; I found out at {person2}'s dinner in {city} {past}.",
        "My favourite {cuisine} dish is {food}, especially the one near the {landmark} in {city}.",
        "I'm trying to cook {food} every {weekday} this {season}, from {person}'s recipe.",
        "{person} recommended a {cuisine} restaurant close to the {landmark} in {city}.",
        "I stopped eating {food} in {month} {year} after {person} suggested it.",
    ],
    "travel": [
        "I'm flying to {city} {future} for {n} days with {person}.",
        "Last {season} I visited {city} with {person} and went {activity} near the {landmark}.",
        "{person} wants to move to {city} in {year} to work at {company}.",
        "I booked a hotel in {city} from {month} {day} to {month} {day2}.",
        "My passport expires in {month} {year}, before the trip to {city} with {person}.",
    ],
    "work": [
        "I started a new job as a {role} at {company} {past}; {person} referred me.",
        "My manager {person} wants the {project} project finished by {month} {day}.",
        "The {project} launch at {company} slipped to {month} {year}, {person} told me.",
        "{person} from {company} is my main contact for the {project} integration in {city}.",
        "I have a review with {person} on {weekday} at {hour}:00 about the {project} project.",
    ],
    "health": [
        "I've been running {n} km every {weekday} since {month} {year} with {person}.",
        "My doctor in {city} told me {past} to cut down on {food}.",
        "I sleep about {hours} hours a night while the {project} project at {company} is busy.",
        "{person} and I signed up for a {activity} class in {city} on {weekday} evenings.",
        "I twisted my ankle {activity} in {city} {past} and am resting it for {n} weeks.",
    ],
    "hobby": [
        "I've been learning the {instrument} since {month} {year} with {person} as my teacher.",
        "I just finished a book by {author} about {subject} that {person} gave me {past}.",
        "On weekends I go {activity} with {person} outside {city}.",
        "I'm entering a {activity} competition in {city} in {month} with {person}.",
        "{person} lent me a novel by {author}; I should give it back by {month} {day}.",
    ],
    "family": [
        "My {relative} {person} lives in {city} and visits every {month}.",
        "{person}'s birthday is on {month} {day} and they love {food}.",
        "Our {pet} {pet_name} has a vet appointment {future} at the clinic near the {landmark}.",
        "My {relative} {person} is getting married in {city} in {month} {year}.",
        "{person} picks the kids up from {activity} on {weekday}s while I'm in {city}.",
    ],
}
# Some memories carry a second clause, as people's notes do.
DETAILS = [
    " {person2} was there too.",
    " I told {person2} about it {past}.",
    " Remind me about it in {month}.",
    " {person2} thinks it's a great idea.",
    " I should write it down for {person2}.",
]

TOPICS = list(MEMORY_TEMPLATES)

# Questions an agent would ask about the memories above, worded differently from them.
QUERY_TEMPLATES = [
    "What food does {person} like?",
    "Where did I eat {cuisine} food?",
    "Which restaurants were recommended to me in {city}?",
    "Is anyone I know allergic to {food}?",
    "What am I cooking on {weekday}s?",
    "When am I travelling to {city}?",
    "Who is coming with me on the trip to {city}?",
    "Where is {person} planning to move?",
    "Where do I work and what is my role?",
    "What is the deadline for the {project} project?",
    "Who is my contact at {company}?",
    "How often do I go running?",
    "What did my doctor say about my diet?",
    "How much am I sleeping lately?",
    "Which instrument am I learning?",
    "What have I been reading recently?",
    "What do I do on weekends with {person}?",
    "When is {person}'s birthday?",
    "Where does my {relative} live?",
    "When does {pet_name} see the vet?",
]


def _slots(rng: random.Random) -> dict[str, Any]:
    month = rng.choice(MONTHS)
    day = rng.randint(1, 27)
    return {
        "person": rng.choice(PEOPLE), "person2": rng.choice(PEOPLE), "city": rng.choice(CITIES),
        "landmark": rng.choice(LANDMARKS), "food": rng.choice(FOODS),
        "cuisine": rng.choice(CUISINES), "activity": rng.choice(ACTIVITIES),
        "instrument": rng.choice(INSTRUMENTS), "author": rng.choice(AUTHORS),
        "subject": rng.choice(SUBJECTS), "company": rng.choice(COMPANIES),
        "project": rng.choice(PROJECTS), "role": rng.choice(ROLES),
        "relative": rng.choice(RELATIVES), "pet": rng.choice(PETS),
        "pet_name": rng.choice(PET_NAMES), "month": month, "weekday": rng.choice(WEEKDAYS),
        "season": rng.choice(SEASONS), "day": day, "day2": day + rng.randint(1, 4),
        "year": rng.randint(2019, 2027), "n": rng.randint(2, 12),
        "hours": rng.choice(["five", "six", "seven", "eight"]), "hour": rng.randint(8, 17),
        "past": rng.choice([
            f"last {rng.choice(WEEKDAYS)}", f"on {month} {day}", f"in {month}",
            f"{rng.randint(2, 9)} weeks ago", f"last {rng.choice(SEASONS)}",
        ]),
        "future": rng.choice([
            f"next {rng.choice(WEEKDAYS)}", f"on {month} {day}", f"in {month}",
            f"in {rng.randint(2, 9)} weeks", f"this {rng.choice(SEASONS)}",
        ]),
    }


def memory_text(rng: random.Random, topic: str) -> str:
    slots = _slots(rng)
    text = rng.choice(MEMORY_TEMPLATES[topic]).format(**slots)
    if rng.random() < 0.3:
        text += rng.choice(DETAILS).format(**slots)
    return text[0].upper() + text[1:]


def query_text(rng: random.Random) -> str:
    return rng.choice(QUERY_TEMPLATES).format(**_slots(rng))


@dataclass(frozen=True)
class AddRequest:
    user_id: str
    topic: str
    texts: list[str]

    def body(self) -> dict[str, Any]:
        return {
            "messages": [{"role": "user", "content": text} for text in self.texts],
            "user_id": self.user_id,
            "metadata": {"topic": self.topic, "source": "bench"},
            "infer": False,
        }


def add_requests(n: int, batch: int, users: list[str], seed: int) -> list[AddRequest]:
    """N messages in requests of ``batch``; each request is one user and one topic.

    Users take requests in turn and each user's topics cycle from ``food`` on, so every user
    holds memories of the filtered topic and about one in six of its memories match it.
    """
    rng = random.Random(seed)
    requests = []
    for index in range(math.ceil(n / batch)):
        size = min(batch, n - index * batch)
        topic = TOPICS[(index // len(users)) % len(TOPICS)]
        texts = [memory_text(rng, topic) for _ in range(size)]
        requests.append(AddRequest(users[index % len(users)], topic, texts))
    return requests


# -- measurement --------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_summary(latencies_s: list[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None,
                "min_ms": None, "max_ms": None}
    ms = sorted(v * 1000 for v in latencies_s)
    return {
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "mean_ms": round(sum(ms) / len(ms), 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
    }


@dataclass
class Tally:
    """Outcome of a set of requests: latencies of successes, errors by status, samples."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    def error(self, key: str, sample: str) -> None:
        self.errors[key] += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{key}: {sample[:300]}")

    def errors_json(self) -> dict[str, Any]:
        return {"errors": sum(self.errors.values()), "errors_by_status": dict(self.errors),
                "error_samples": self.error_samples}


async def timed_post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], tally: Tally, expect: int
) -> dict[str, Any] | None:
    started = time.perf_counter()
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        tally.error(type(exc).__name__, str(exc))
        return None
    elapsed = time.perf_counter() - started
    if response.status_code != expect:
        tally.error(str(response.status_code), response.text)
        return None
    tally.latencies_s.append(elapsed)
    payload: dict[str, Any] = response.json()
    return payload


async def run_pool(jobs: list[Any], workers: int, handle: Any) -> float:
    """Run ``handle(job)`` over ``jobs`` with ``workers`` in flight; returns the wall time."""
    iterator: Iterator[Any] = iter(jobs)

    async def worker() -> None:
        for job in iterator:  # one shared iterator: each job is taken exactly once
            await handle(job)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    return time.perf_counter() - started


async def load(
    client: httpx.AsyncClient, requests: list[AddRequest], in_flight: int
) -> dict[str, Any]:
    tally = Tally()
    events: Counter[str] = Counter()
    accepted = 0

    async def send(request: AddRequest) -> None:
        nonlocal accepted
        payload = await timed_post(client, "/v1/memories", request.body(), tally, expect=201)
        if payload is not None:
            accepted += len(request.texts)
            for result in payload.get("results", []):
                events[str(result.get("event"))] += 1

    wall = await run_pool(requests, in_flight, send)
    return {
        "requests": len(requests),
        "messages": sum(len(r.texts) for r in requests),
        "accepted": accepted,
        "events": dict(events),
        "wall_s": round(wall, 3),
        "memories_per_s": round(accepted / wall, 1) if wall else None,
        "request_latency": latency_summary(tally.latencies_s),
        **tally.errors_json(),
    }


@dataclass(frozen=True)
class Query:
    text: str
    user_id: str

    def body(self, filtered: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"query": self.text, "top_k": 10, "user_id": self.user_id}
        if filtered:
            body["filters"] = {"metadata.topic": FILTER_TOPIC}
        return body


async def search(
    client: httpx.AsyncClient, queries: list[Query], clients: int, filtered: bool
) -> dict[str, Any]:
    tally = Tally()
    hits: list[int] = []
    violations = 0
    checked = 0

    async def ask(query: Query) -> None:
        nonlocal violations, checked
        payload = await timed_post(
            client, "/v1/memories/search", query.body(filtered), tally, expect=200
        )
        if payload is None:
            return
        results = payload.get("results", [])
        hits.append(len(results))
        if filtered:
            for result in results:
                metadata = result.get("metadata")
                if isinstance(metadata, dict):
                    checked += 1
                    violations += metadata.get("topic") != FILTER_TOPIC

    wall = await run_pool(queries, clients, ask)
    return {
        "clients": clients,
        "queries": len(queries),
        "filters": {"metadata.topic": FILTER_TOPIC} if filtered else None,
        "wall_s": round(wall, 3),
        "qps": round(len(tally.latencies_s) / wall, 1) if wall else None,
        **latency_summary(tally.latencies_s),
        "mean_hits": round(sum(hits) / len(hits), 2) if hits else None,
        "empty_results": sum(1 for h in hits if h == 0),
        # Hits whose returned metadata contradicts the filter (only counted when returned).
        "filter_violations": violations if filtered and checked else None,
        **tally.errors_json(),
    }


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def make_client(
    base_url: str, api_key: str, connections: int, trust_env: bool
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=httpx.Timeout(300.0, connect=10.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=trust_env,
    )


async def run_size(
    n: int, api_key: str, args: argparse.Namespace, pid: int | None, trust_env: bool, seed: int
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    # Requests go to users in turn; a small N has fewer requests than users, and a user
    # without memories would only measure empty searches.
    user_count = min(USERS_PER_RUN, math.ceil(n / args.batch))
    users = [f"bench-{tag}-n{n}-u{i}" for i in range(user_count)]
    requests = add_requests(n, args.batch, users, seed)
    rng = random.Random(seed + 1)
    queries = [Query(query_text(rng), rng.choice(users)) for _ in range(args.queries)]
    warmup = [Query(query_text(rng), rng.choice(users)) for _ in range(WARMUP_QUERIES)]
    connections = max(args.concurrency, args.load_concurrency)
    result: dict[str, Any] = {
        "n": n, "users": len(users), "memories_per_user": round(n / len(users), 1),
        "server_rss_mb": {"before_load": await asyncio.to_thread(rss_mb, pid)},
    }
    async with make_client(args.base_url, api_key, connections, trust_env) as client:
        progress(f"n={n}: loading {n} memories in {len(requests)} requests")
        result["load"] = await load(client, requests, args.load_concurrency)
        progress(f"n={n}: load {result['load']['memories_per_s']} memories/s, "
                 f"{result['load']['errors']} errors")
        result["server_rss_mb"]["after_load"] = await asyncio.to_thread(rss_mb, pid)
        await search(client, warmup, 1, filtered=False)
        await search(client, warmup, 1, filtered=True)
        result["search"] = {}
        for name, clients, filtered in (
            ("sequential", 1, False),
            ("concurrent", args.concurrency, False),
            ("filtered_sequential", 1, True),
            ("filtered_concurrent", args.concurrency, True),
        ):
            result["search"][name] = await search(client, queries, clients, filtered)
            stats = result["search"][name]
            progress(f"n={n}: search {name}: p50 {stats['p50_ms']} ms, "
                     f"p99 {stats['p99_ms']} ms, {stats['qps']} qps, {stats['errors']} errors")
        result["server_rss_mb"]["after_search"] = await asyncio.to_thread(rss_mb, pid)
    return result


# -- a server of our own ------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[http_load] {message}", file=sys.stderr, flush=True)


def anamnesis_command() -> list[str]:
    beside = Path(sys.executable).parent / "anamnesis"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("anamnesis")
    if found:
        return [found]
    return [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedServer:
    """`anamnesis serve` on a free port over a throwaway data directory."""

    def __init__(self, startup_timeout_s: float, keep_data: bool):
        self.startup_timeout_s = startup_timeout_s
        self.keep_data = keep_data
        self.root = Path(tempfile.mkdtemp(prefix="anamnesis-bench-"))
        # The bundled Postgres runs as another user when we are root: it must reach the folder.
        self.root.chmod(0o755)
        self.data_dir = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "ANAMNESIS_DATA_DIR": str(self.data_dir)}
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def start(self) -> None:
        command = [*anamnesis_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        progress(f"starting {' '.join(command)} (data {self.data_dir}, log {self.log_path})")
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(base_url=self.base_url, timeout=5.0, trust_env=False) as client:
            for path in ("/health", "/ready"):
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(
                            f"server exited with {self.process.returncode} while waiting for "
                            f"{path}:\n{self.log_tail()}"
                        )
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"server not answering 200 on {path} within "
                                           f"{self.startup_timeout_s}s:\n{self.log_tail()}")
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(path).status_code == 200:
                            break
                    time.sleep(0.25)
        self.startup_s = round(time.perf_counter() - started, 2)
        progress(f"server ready on {self.base_url} after {self.startup_s}s")

    def create_key(self, project: str) -> str:
        result = subprocess.run(
            [*anamnesis_command(), "keys", "create", "--project", project],
            cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, check=False,
            timeout=300,
        )
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"`anamnesis keys create --project {project}` failed "
                               f"({result.returncode}): {result.stderr.strip()[-2000:]}")
        return lines[-1].strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                progress("server ignored SIGINT for 60s; terminating it")
                self.process.terminate()
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        if self.keep_data:
            progress(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- entry point --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load N memories over HTTP, then time searches; prints JSON on stdout."
    )
    parser.add_argument("--n", type=int, action="append",
                        help="memories to load (repeat for several sizes; default 10000)")
    parser.add_argument("--base-url", help="a running server; without it one is started")
    parser.add_argument("--api-key", default=os.environ.get("ANAMNESIS_API_KEY"),
                        help="key for --base-url (default $ANAMNESIS_API_KEY)")
    parser.add_argument("--server-pid", type=int,
                        help="pid of the --base-url server, to report its RSS")
    parser.add_argument("--batch", type=int, default=50, help="messages per add request")
    parser.add_argument("--load-concurrency", type=int, default=4,
                        help="add requests in flight")
    parser.add_argument("--queries", type=int, default=300, help="searches per variant")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="clients in the concurrent search variants")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for a started server's /ready")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the started server's temporary data directory")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.n = args.n or [10_000]
    if any(n < 1 for n in args.n):
        parser.error("--n must be positive")
    if not 1 <= args.batch <= 200:
        parser.error("--batch must be 1..200 (the server's per-request message limit)")
    if args.queries < 1 or args.concurrency < 1 or args.load_concurrency < 1:
        parser.error("--queries, --concurrency and --load-concurrency must be positive")
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key (or $ANAMNESIS_API_KEY)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "http_load",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "sizes": args.n, "batch": args.batch, "load_concurrency": args.load_concurrency,
            "queries": args.queries, "warmup_queries": WARMUP_QUERIES,
            "concurrency": args.concurrency, "max_users_per_size": USERS_PER_RUN, "top_k": 10,
            "seed": args.seed,
        },
    }
    server: ManagedServer | None = None
    try:
        if args.base_url:
            pid = args.server_pid
            report["server"] = {"base_url": args.base_url, "managed": False, "pid": pid}
        else:
            server = ManagedServer(args.startup_timeout, args.keep_data)
            server.start()
            args.base_url = server.base_url
            pid = server.pid
            report["server"] = {"base_url": server.base_url, "managed": True, "pid": pid,
                                "startup_s": server.startup_s,
                                "rss_mb_at_ready": rss_mb(pid)}
        report["runs"] = []
        for index, n in enumerate(args.n):
            # Each size gets its own project (own server) or its own users (given server).
            api_key = server.create_key(f"bench-{n}") if server else args.api_key
            report["runs"].append(asyncio.run(
                run_size(n, api_key, args, pid, trust_env=server is None,
                         seed=args.seed + 1000 * index)
            ))
    finally:
        if server is not None:
            server.stop()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
