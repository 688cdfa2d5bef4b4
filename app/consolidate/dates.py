"""Relative dates, resolved in code: the model copies the time words of a message ("last
March", "yesterday", "in 2019") and this turns them into a day, against when the message was
said. Small models get date arithmetic wrong; parsing is a solved problem (``dateparser``),
and the few phrases it leaves out (a month or a season with "last") are read here."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

import dateparser

_LEAD = re.compile(r"^(?:back |way )?(?:since|in|on|at|around|about|from|during|by|of|"
                   r"sometime|some time)\s+", re.IGNORECASE)
_LAST = re.compile(r"^last\s+(january|february|march|april|may|june|july|august|september|"
                   r"october|november|december)$", re.IGNORECASE)
_SEASON = re.compile(r"^(last|this)\s+(spring|summer|autumn|fall|winter)$", re.IGNORECASE)
_SEASON_START = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
_SETTINGS: dict[str, Any] = {"PREFER_DATES_FROM": "past", "PREFER_DAY_OF_MONTH": "first",
                             "PREFER_MONTH_OF_YEAR": "first",
                             "RETURN_AS_TIMEZONE_AWARE": False}


def resolve_when(phrase: str | None, said_at: datetime) -> date | None:
    """The day ``phrase`` points to, said at ``said_at``; None when it names no day, or one
    after the day it was said (a plan is not yet true)."""
    if not phrase:
        return None
    text = " ".join(phrase.strip().strip(".,;!").split())
    text = _LEAD.sub("", text)
    base = said_at.replace(tzinfo=None)
    day = _month_or_season(text, base.date())
    if day is None:
        parsed = dateparser.parse(text, languages=["en"],
                                  settings={**_SETTINGS, "RELATIVE_BASE": base})
        day = parsed.date() if parsed is not None else None
    if day is None or day > base.date():
        return None
    return day


def _month_or_season(text: str, today: date) -> date | None:
    """"last March": the latest March before this month; "last summer": the latest summer
    already over; "this summer": this year's, if it has begun."""
    if match := _LAST.match(text):
        month = datetime.strptime(match.group(1).title(), "%B").month
        year = today.year if month < today.month else today.year - 1
        return date(year, month, 1)
    if match := _SEASON.match(text):
        start = _SEASON_START[match.group(2).lower()]
        year = today.year
        if match.group(1).lower() == "last":
            # The latest season of that name that has ended (it lasts three months).
            end = date(year, start, 1) + timedelta(days=92)
            if end > today:
                year -= 1
        elif date(year, start, 1) > today:
            return None
        return date(year, start, 1)
    return None
