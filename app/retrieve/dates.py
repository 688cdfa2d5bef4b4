"""The period a query names ("in May 2023", "last June", "on 8 May 2023", "in 2022", "two
weeks ago"), which search then matches against when each memory was said or holds.

Written by hand rather than with ``dateparser.search``: that finds dates in any word
("may", "march", "second") and costs milliseconds a query; a query names a period in a few
set shapes, read here by regular expressions in microseconds. A month name counts only
capitalised or next to a day or year ("may" is a verb)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
_MONTH = r"(January|February|March|April|May|June|July|August|September|October|November|" \
         r"December)"
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}

_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+(\d{{4}})\b",
                             re.IGNORECASE)
_MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b",
                             re.IGNORECASE)
_MONTH_YEAR = re.compile(rf"\b{_MONTH},?\s+(?:of\s+)?(\d{{4}})\b", re.IGNORECASE)
_YEAR = re.compile(r"\b(19\d{2}|20\d{2})\b")
_LAST_MONTH_NAME = re.compile(rf"\blast\s+{_MONTH}\b", re.IGNORECASE)
_IN_MONTH = re.compile(rf"\b(?:in|during|since|of|early|late|mid)[\s-]+{_MONTH}\b")
_RELATIVE = re.compile(r"\b(yesterday|today|(?:last|this|past)\s+(week|month|year)|"
                       r"(\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten)\s+"
                       r"(day|week|month|year)s?\s+ago)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Period:
    """[start, end): the time a query names; or, for a month named without a year ("in
    June"), that month of any year (``month``)."""

    start: datetime | None = None
    end: datetime | None = None
    month: int | None = None

    def holds(self, moment: datetime) -> bool:
        if self.month is not None:
            return moment.month == self.month
        return self.start is not None and self.end is not None and \
            self.start <= moment < self.end


def query_period(query: str, now: datetime | None = None) -> Period | None:
    """The period ``query`` names, the most precise one when it names several; None when it
    names none. Relative phrases ("last June", "two weeks ago") count back from ``now``."""
    now = now or datetime.now(UTC)
    if match := _DAY_MONTH_YEAR.search(query):
        return _day(int(match.group(3)), _month(match.group(2)), int(match.group(1)))
    if match := _MONTH_DAY_YEAR.search(query):
        return _day(int(match.group(3)), _month(match.group(1)), int(match.group(2)))
    if match := _MONTH_YEAR.search(query):
        return _whole_month(int(match.group(2)), _month(match.group(1)))
    if match := _LAST_MONTH_NAME.search(query):
        month = _month(match.group(1))
        return _whole_month(now.year if month < now.month else now.year - 1, month)
    if match := _RELATIVE.search(query):
        return _relative(match, now)
    if match := _YEAR.search(query):
        year = int(match.group(1))
        return Period(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
    if match := _IN_MONTH.search(query):  # "in June": a June, of whichever year
        return Period(month=_month(match.group(1)))
    return None


def _month(name: str) -> int:
    return MONTHS.index(name.lower()) + 1


def _day(year: int, month: int, day: int) -> Period | None:
    try:
        start = datetime(year, month, day, tzinfo=UTC)
    except ValueError:  # "31 June"
        return None
    return Period(start, start + timedelta(days=1))


def _whole_month(year: int, month: int) -> Period:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return Period(start, end)


def _relative(match: re.Match[str], now: datetime) -> Period:
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    phrase = match.group(1).lower()
    if phrase == "yesterday":
        return Period(today - timedelta(days=1), today)
    if phrase == "today":
        return Period(today, today + timedelta(days=1))
    if match.group(2):  # last/this/past week|month|year: the span reaching back to today
        days = _UNIT_DAYS[match.group(2).lower()]
        return Period(today - timedelta(days=days), today + timedelta(days=1))
    count = _NUMBERS.get(match.group(3).lower()) or int(match.group(3))
    days = _UNIT_DAYS[match.group(4).lower()]
    # "two weeks ago": around that day, give or take half a unit
    middle = today - timedelta(days=count * days)
    return Period(middle - timedelta(days=days / 2), middle + timedelta(days=days / 2 + 1))
