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
