"""The maintenance window: may a new node start now?

Reference formats (kubeos-behavior.md §3.3): both bounds empty (always open), both
``YYYY-MM-DD hh:mm:ss`` (one absolute window) or both ``hh:mm:ss`` (daily, may cross
midnight). Additions: ``days`` (the weekdays on which a daily window *opens*; a window that
crosses midnight keeps running into the next day) and ``timezone`` (IANA; empty means the
operator's local time, as in the reference). The window is half-open, ``start <= now < end``.

Pure: the caller passes "now" (an aware datetime from an injectable clock). Besides open or
closed, the result says when it next opens, so the controller can sleep until then.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubeos.api.models import TimeWindow

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_TIME_ONLY = re.compile(r"^\d{2}:\d{2}:\d{2}$")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class WindowError(ValueError):
    """The window is malformed; the message names the problem."""


@dataclass(frozen=True)
class WindowState:
    open: bool
    next_open: datetime | None = None  # None: open now, or never opens again


def _zone(name: str) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise WindowError(f"timewindow.timezone {name!r} is not a known IANA time zone") from error


def _localize(naive: datetime, zone: tzinfo | None) -> datetime:
    return naive.replace(tzinfo=zone) if zone is not None else naive.astimezone()


def evaluate(window: TimeWindow | None, now: datetime) -> WindowState:
    """Whether *window* is open at the aware instant *now*; raises WindowError if malformed."""
    if window is None or (not window.starttime and not window.endtime):
        return WindowState(True)
    start, end = window.starttime, window.endtime
    if not start or not end:
        raise WindowError("timewindow.starttime and timewindow.endtime must both be set")
    if start == end:
        raise WindowError("timewindow.starttime and timewindow.endtime must differ")
    if now.tzinfo is None:
        raise WindowError("internal: now must be timezone-aware")
    zone = _zone(window.timezone)
    if _DATE_TIME.match(start) and _DATE_TIME.match(end):
        return _absolute(start, end, now, zone)
    if _TIME_ONLY.match(start) and _TIME_ONLY.match(end):
        return _daily(start, end, now, zone, window.days)
    raise WindowError(
        'timewindow bounds must both be "YYYY-MM-DD hh:mm:ss" or both "hh:mm:ss", got '
        f"{start!r} and {end!r}"
    )


def _absolute(start: str, end: str, now: datetime, zone: tzinfo | None) -> WindowState:
    try:
        begin = _localize(datetime.strptime(start, "%Y-%m-%d %H:%M:%S"), zone)
        finish = _localize(datetime.strptime(end, "%Y-%m-%d %H:%M:%S"), zone)
    except ValueError as error:
        raise WindowError(f"timewindow: invalid date: {error}") from error
    if finish < begin:
        raise WindowError("timewindow.endtime is before timewindow.starttime")
    if begin <= now < finish:
        return WindowState(True)
    return WindowState(False, begin if now < begin else None)


def _parse_time(text: str) -> time:
    try:
        return datetime.strptime(text, "%H:%M:%S").time()
    except ValueError as error:
        raise WindowError(f"timewindow: invalid time {text!r}: {error}") from error


def _daily(
    start: str, end: str, now: datetime, zone: tzinfo | None, days: Sequence[str]
) -> WindowState:
    begin_t, end_t = _parse_time(start), _parse_time(end)
    allowed = {WEEKDAYS.index(d) for d in days} if days else set(range(7))
    local = now.astimezone(zone) if zone is not None else now.astimezone()
    length = datetime.combine(date.min, end_t) - datetime.combine(date.min, begin_t)
    if length <= timedelta(0):
        length += timedelta(days=1)  # crosses midnight
    # A window opened today or yesterday (if it crosses midnight) may contain now.
    for back in (0, 1):
        day = local.date() - timedelta(days=back)
        opened = _localize(datetime.combine(day, begin_t), zone)
        if day.weekday() in allowed and opened <= local < opened + length:
            return WindowState(True)
    for ahead in range(0, 8):
        day = local.date() + timedelta(days=ahead)
        opened = _localize(datetime.combine(day, begin_t), zone)
        if day.weekday() in allowed and opened > local:
            return WindowState(False, opened)
    return WindowState(False, None)
