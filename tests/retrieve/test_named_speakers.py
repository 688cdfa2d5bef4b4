"""Which speakers a query names (``app.domain.named_speakers``): whole words, case aside; and
the query searched without them (``app.domain.without_names``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.domain import ProjectScope, named_speakers, speaker_of, without_names
from app.index.lexical import LexicalIndex
from app.index.slots import SlotTable
from app.store.repositories.changes import IndexRow

SPEAKERS = {speaker_of(name) for name in ("Caroline", "Melanie", "Mary Ann", "J.R.", "!!!")}


@pytest.mark.parametrize(("query", "named"), [
    ("What did Caroline paint?", {"caroline"}),
    ("what did CAROLINE's sister say?", {"caroline"}),
    ("What did Carol paint?", set()),  # a name inside another is not named
    ("What do Caroline and Melanie have in common?", {"caroline", "melanie"}),
    ("Where did Mary  Ann go?", {"mary ann"}),
    ("Where did Mary go?", set()),  # part of a two-word name
    ("What did J.R. buy?", {"j.r."}),
    ("Anything at all?", set()),  # a name without letters names no one
])
def test_a_query_names_the_speakers_whose_whole_name_it_holds(query: str,
                                                               named: set[str]) -> None:
    assert named_speakers(query, {s for s in SPEAKERS if s}) == named


def test_a_speaker_is_a_name_that_says_something() -> None:
    assert speaker_of("  Mary   Ann ") == "mary ann"
    assert speaker_of("") is None
    assert speaker_of("   ") is None
    assert speaker_of(7) is None
    assert speaker_of(None) is None


@pytest.mark.parametrize(("query", "searched"), [
    ("What would Caroline's political leaning likely be?",
     "What would political leaning likely be?"),
    ("What do Caroline and Melanie have in common?", "What do and have in common?"),
    ("Did caroline\u2019s sister call CAROLINE?", "Did sister call ?"),
    ("Where did Mary  Ann go?", "Where did go?"),
    ("What did Carol paint? Carolines?", "What did Carol paint? Carolines?"),  # not named
    ("Caroline?", "Caroline?"),  # nothing would be left to search for
])
def test_a_query_is_searched_without_the_speakers_it_names(query: str, searched: str) -> None:
    assert without_names(query, named_speakers(query, {s for s in SPEAKERS if s})) == searched


def _row(project: uuid.UUID, user: str, name: str | None, kind: str = "message") -> IndexRow:
    now = datetime.now(UTC)
    return IndexRow(uuid.uuid4(), project, user, None, None, kind, "text", None, "hash", [],
                    now, None, None, None, False, name=name)


def test_the_index_knows_who_speaks_in_a_scope_as_messages_arrive() -> None:
    table, project, other = SlotTable(), uuid.uuid4(), uuid.uuid4()
    for slot, row in enumerate([_row(project, "u1", "Caroline"), _row(project, "u1", None),
                                _row(project, "u2", "Melanie"), _row(other, "u1", "Nate"),
                                _row(project, "u1", None, kind="fact"),
                                _row(project, "u1", "!!!")]):  # a name naming no one
        table.add(slot, row)
    everyone = "Did Caroline, Melanie, Mary Ann or Nate call?"

    def named(where: ProjectScope) -> set[str]:
        return table.speakers_named(where, everyone)

    assert named(ProjectScope(project, "u1")) == {"caroline"}
    assert named(ProjectScope(project)) == {"caroline", "melanie"}
    assert named(ProjectScope(project, "nobody")) == set()
    table.add(6, _row(project, "u1", "  Mary   Ann "))  # after the first look: added to it
    assert named(ProjectScope(project, "u1")) == {"caroline", "mary ann"}
    assert named(ProjectScope(project)) == {"caroline", "melanie", "mary ann"}
    assert named(ProjectScope(uuid.uuid4(), "u1")) == set()
    assert table.speakers_named(ProjectScope(project), "Did Mary call?!!!") == set()
    assert table.speakers_named(ProjectScope(project), "did MARY ANN's cat?") == {"mary ann"}


def test_the_lexical_index_tells_which_documents_hold_a_name() -> None:
    lexical = LexicalIndex()
    for slot, text in enumerate(["Joanna finished a marathon", "Nate finished a marathon",
                                 "Mary Ann plays chess", "Ann plays chess"]):
        lexical.add(slot, 0, text)
    assert lexical.holding([0, 1, 9], "joanna") == [True, False, False]
    assert lexical.holding([2, 3], "mary ann") == [True, False]  # every word of the name
    assert lexical.holding([0, 1], "nobody") == [False, False]
