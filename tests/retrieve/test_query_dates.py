"""The period a query names, read by ``query_period`` (what the date signal of search
matches against when a memory was said or holds)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.retrieve.dates import Period, query_period

NOW = datetime(2026, 12, 1, 15, 30, tzinfo=UTC)


def day(year: int, month: int, d: int) -> datetime:
    return datetime(year, month, d, tzinfo=UTC)


@pytest.mark.parametrize(("query", "period"), [
    ("What did Maria do on 8 May 2023?", Period(day(2023, 5, 8), day(2023, 5, 9))),
    ("Who came on the 3rd of March, 2021?", Period(day(2021, 3, 3), day(2021, 3, 4))),
    ("What painting did she show on October 13, 2023?",
     Period(day(2023, 10, 13), day(2023, 10, 14))),
    ("What did she start in December 2023?", Period(day(2023, 12, 1), day(2024, 1, 1))),
    ("Where was he in july 2022", Period(day(2022, 7, 1), day(2022, 8, 1))),
    ("How often did he run in 2022?", Period(day(2022, 1, 1), day(2023, 1, 1))),
    ("Where did we go last June?", Period(day(2026, 6, 1), day(2026, 7, 1))),
    ("What did I buy last December?", Period(day(2025, 12, 1), day(2026, 1, 1))),
    ("When did Melanie go camping in June?", Period(month=6)),
    ("What did I eat yesterday?", Period(day(2026, 11, 30), day(2026, 12, 1))),
    ("Anything new today?", Period(day(2026, 12, 1), day(2026, 12, 2))),
    ("What did we plan last week?", Period(day(2026, 11, 24), day(2026, 12, 2))),
    ("What did I cook three weeks ago?",
     Period(datetime(2026, 11, 6, 12, tzinfo=UTC), datetime(2026, 11, 14, 12, tzinfo=UTC))),
    ("Where was I 2 years ago?",
     Period(datetime(2024, 6, 1, 12, tzinfo=UTC), datetime(2025, 6, 2, 12, tzinfo=UTC))),
])
def test_a_query_names_a_period(query: str, period: Period) -> None:
    assert query_period(query, NOW) == period


@pytest.mark.parametrize("query", [
    "What may Caroline do next?",  # "may" is a verb
    "What did she paint?",
    "Who came on 31 June 2023?",  # no such day
])
def test_a_query_that_names_no_period(query: str) -> None:
    assert query_period(query, NOW) is None


def test_a_month_without_a_year_holds_in_any_year() -> None:
    june = Period(month=6)
    assert june.holds(day(2019, 6, 30))
    assert june.holds(day(2023, 6, 1))
    assert not june.holds(day(2023, 7, 1))
    assert not Period().holds(NOW)
