"""Command lines: `--help` exits 0 and documents every flag; a bad or missing flag exits 2 with a reason."""

from __future__ import annotations

import pytest
from e2e_support import run_cli

pytestmark = pytest.mark.e2e

FLAGS = {
    "write_service": ["--listen", "--event-store"],
    "projector": ["--event-store", "--read-db"],
    "read_service": ["--listen", "--read-db", "--event-store", "--max-wait"],
}


@pytest.mark.parametrize("module", sorted(FLAGS))
def test_help_exits_0_and_documents_every_flag(module: str) -> None:
    result = run_cli(module, ["--help"])
    assert result.returncode == 0, result.stderr
    for flag in FLAGS[module]:
        assert flag in result.stdout, f"{module} --help does not mention {flag}:\n{result.stdout}"


E = "/nonexistent-dir-for-e2e/events.db"  # never opened: parsing fails first
R = "/nonexistent-dir-for-e2e/read.db"

BAD = [
    # (module, args, a word the one-line reason must contain)
    ("write_service", [], "listen"),
    ("write_service", ["--listen", "127.0.0.1:0"], "event-store"),
    ("write_service", ["--event-store", E], "listen"),
    ("write_service", ["--listen", "127.0.0.1:0", "--event-store", E, "--bogus-flag"], "bogus-flag"),
    ("write_service", ["--listen", "127.0.0.1:notaport", "--event-store", E], "listen"),
    ("write_service", ["--listen", "no-port-here", "--event-store", E], "listen"),
    ("projector", [], "event-store"),
    ("projector", ["--event-store", E], "read-db"),
    ("projector", ["--event-store", E, "--read-db", R, "--bogus-flag"], "bogus-flag"),
    ("read_service", ["--listen", "127.0.0.1:0", "--event-store", E], "read-db"),
    ("read_service", ["--listen", "127.0.0.1:0", "--read-db", R], "event-store"),
    (
        "read_service",
        ["--listen", "127.0.0.1:0", "--read-db", R, "--event-store", E, "--max-wait", "abc"],
        "max-wait",
    ),
    ("read_service", ["--listen", "127.0.0.1:x", "--read-db", R, "--event-store", E], "listen"),
    (
        "read_service",
        ["--listen", "127.0.0.1:0", "--read-db", R, "--event-store", E, "--bogus-flag"],
        "bogus-flag",
    ),
]


@pytest.mark.parametrize(
    ("module", "args", "word"), BAD, ids=[f"{m}:{' '.join(a) or '(none)'}" for m, a, _ in BAD]
)
def test_bad_or_missing_flag_exits_2_with_a_one_line_reason(module: str, args: list[str], word: str) -> None:
    result = run_cli(module, args)
    assert result.returncode == 2, (
        f"{module} {args}: exit {result.returncode}, expected 2; stderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, f"{module} {args} printed a traceback:\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, f"{module} {args}: nothing on stderr"
    reason = lines[-1]
    assert word in reason, f"{module} {args}: reason {reason!r} does not name {word!r}"
    assert "listening on" not in result.stdout
