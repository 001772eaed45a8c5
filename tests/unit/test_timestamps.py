import random
from datetime import UTC, datetime

from eventcore.timestamps import LastTimestampParser, format_timestamp, parse_timestamp


def test_stored_times_round_trip_to_the_microsecond() -> None:
    for micros in (0, 1, 999_999, 1_795_682_747_123_456, 4_102_444_799_999_999):
        assert parse_timestamp(format_timestamp(micros)) == micros


def test_the_stored_form_is_iso_utc_with_microseconds() -> None:
    assert format_timestamp(1_795_682_747_000_001) == "2026-11-26T08:45:47.000001Z"


def test_the_remembering_parser_agrees_with_the_plain_one() -> None:
    parse = LastTimestampParser()
    texts = ["2026-11-26T08:45:47.000001Z", "2026-11-26T08:45:47.000001Z", "2026-11-26T08:45:48.5Z"]
    assert [parse(t) for t in texts] == [parse_timestamp(t) for t in texts]


def test_the_fast_path_agrees_with_the_calendar_on_every_kind_of_day() -> None:
    rng = random.Random(7)
    leap_day = 951_782_400_000_000  # 2000-02-29T00:00:00Z
    samples = [0, leap_day - 1, leap_day, 4_102_444_799_999_999]
    samples += [rng.randrange(0, 4_102_444_800_000_000) for _ in range(2_000)]
    for micros in samples:
        text = format_timestamp(micros)
        moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
        calendar = int(moment.replace(microsecond=0).timestamp()) * 1_000_000 + moment.microsecond
        assert parse_timestamp(text) == calendar == micros, text
    assert parse_timestamp("2026-11-26T08:45:48.5Z") == 1_795_682_748_500_000  # not our own shape
