"""Synthetic memories and questions for the load benchmarks: varied, mostly unique sentences
about people, places, food, work and hobbies, from templates and a seeded RNG."""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

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

    def import_body(self) -> str:
        """The same texts as facts, for ``POST /v1/import``: NDJSON whose header names a model
        the server does not have, so the server embeds every fact itself, as it does an add's."""
        header = {"record": "header", "format": "anamnesis.export", "version": 1,
                  "embedding": {"model": "bench-none", "dimension": 1}}
        lines = [header, *({"record": "memory", "id": str(uuid.uuid4()), "kind": "fact",
                            "text": text, "user_id": self.user_id,
                            "metadata": {"topic": self.topic, "source": "bench"}}
                           for text in self.texts)]
        return "\n".join(json.dumps(line) for line in lines)


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


