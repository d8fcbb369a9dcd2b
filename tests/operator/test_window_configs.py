"""Time window evaluation and the grub current/next swap (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubeos.api.models import SysConfigs, TimeWindow
from kubeos.operator.configs import swap_grub
from kubeos.operator.window import WindowError, evaluate

THU_NOON = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def tw(start: str, end: str, days: list[str] | None = None, tz: str = "UTC") -> TimeWindow:
    return TimeWindow.model_validate(
        {"starttime": start, "endtime": end, "days": days or [], "timezone": tz}
    )


@pytest.mark.parametrize(
    ("window", "now", "is_open"),
    [
        (None, THU_NOON, True),
        (tw("", ""), THU_NOON, True),
        (tw("11:00:00", "13:00:00"), THU_NOON, True),
        (tw("12:00:00", "13:00:00"), THU_NOON, True),  # start is inclusive
        (tw("10:00:00", "12:00:00"), THU_NOON, False),  # end is exclusive
        (tw("13:00:00", "14:00:00"), THU_NOON, False),
        (tw("22:00:00", "02:00:00"), THU_NOON, False),  # crosses midnight
        (tw("22:00:00", "02:00:00"), THU_NOON.replace(hour=23), True),
        (tw("22:00:00", "02:00:00"), THU_NOON.replace(hour=1), True),
        (tw("11:00:00", "13:00:00", ["Thu"]), THU_NOON, True),
        (tw("11:00:00", "13:00:00", ["Fri", "Sat"]), THU_NOON, False),
        # Opened Wednesday 22:00, still running Thursday 01:00 although Thu is not listed.
        (tw("22:00:00", "02:00:00", ["Wed"]), THU_NOON.replace(hour=1), True),
        (tw("22:00:00", "02:00:00", ["Thu"]), THU_NOON.replace(hour=1), False),
        # 12:00 UTC is 13:00 in Berlin (CET, November).
        (tw("12:30:00", "14:00:00", tz="Europe/Berlin"), THU_NOON, True),
        (tw("11:00:00", "12:30:00", tz="Europe/Berlin"), THU_NOON, False),
        (tw("2026-11-26 11:00:00", "2026-11-26 13:00:00"), THU_NOON, True),
        (tw("2026-11-26 13:00:00", "2026-11-27 13:00:00"), THU_NOON, False),
        (tw("2026-11-20 13:00:00", "2026-11-21 13:00:00"), THU_NOON, False),
    ],
)
def test_window(window: TimeWindow | None, now: datetime, is_open: bool) -> None:
    assert evaluate(window, now).open is is_open


def test_next_open_for_daily_window_with_days() -> None:
    state = evaluate(tw("09:00:00", "10:00:00", ["Sat"]), THU_NOON)
    assert not state.open
    assert state.next_open == datetime(2026, 11, 28, 9, 0, tzinfo=UTC).astimezone(
        state.next_open.tzinfo if state.next_open else UTC
    )
    assert state.next_open is not None and state.next_open - THU_NOON == timedelta(
        days=1, hours=21
    )


def test_absolute_window_past_has_no_next_open() -> None:
    assert evaluate(tw("2026-11-20 13:00:00", "2026-11-21 13:00:00"), THU_NOON).next_open is None


@pytest.mark.parametrize(
    "window",
    [
        TimeWindow.model_construct(starttime="10:00:00", endtime="", days=[], timezone=""),
        TimeWindow.model_construct(starttime="10:00:00", endtime="10:00:00", days=[],
                                   timezone=""),
        TimeWindow.model_construct(starttime="2026-11-26 10:00:00", endtime="11:00:00",
                                   days=[], timezone=""),
        TimeWindow.model_construct(starttime="2026-11-27 10:00:00",
                                   endtime="2026-11-26 10:00:00", days=[], timezone=""),
        TimeWindow.model_construct(starttime="25:00:00", endtime="10:00:00", days=[],
                                   timezone=""),
        TimeWindow.model_construct(starttime="10:00:00", endtime="11:00:00", days=[],
                                   timezone="Mars/Olympus"),
    ],
)
def test_invalid_windows(window: TimeWindow) -> None:
    with pytest.raises(WindowError):
        evaluate(window, THU_NOON)


def test_local_time_when_no_timezone() -> None:
    local_noon = datetime(2026, 11, 26, 12, 0).astimezone()
    assert evaluate(tw("11:00:00", "13:00:00", tz=""), local_noon).open


def test_grub_swap_is_a_deep_copy() -> None:
    original = SysConfigs.model_validate({
        "version": "v2",
        "configs": [
            {"model": "grub.cmdline.current", "contents": [{"key": "a", "value": "1"}]},
            {"model": "grub.cmdline.next", "contents": [{"key": "b", "value": "2"}]},
            {"model": "kernel.sysctl", "contents": [{"key": "c", "value": "3"}]},
        ],
    })
    swapped = swap_grub(original)
    assert [c.model for c in swapped.configs] == [
        "grub.cmdline.next", "grub.cmdline.current", "kernel.sysctl"
    ]
    assert [c.contents[0].key for c in swapped.configs] == ["a", "b", "c"]
    assert next(c.model for c in original.configs) == "grub.cmdline.current"
