"""Which speakers a query names (``app.domain.named_speakers``): whole words, case aside; and
the query searched without them (``app.domain.without_names``)."""

from __future__ import annotations

import pytest

from app.domain import named_speakers, speaker_of, without_names

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
