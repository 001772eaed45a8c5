"""The token file, authentication by hash, reloading, and the `new` command line; never a secret in a log."""

from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from servicekit import tokens
from servicekit.tokens import Principal, TokenFileError, TokenStore, TokenTable

ROOT = Path(__file__).resolve().parents[2]
WRITER_TOKEN = "writer-secret-token-value"
READER_TOKEN = "reader-secret-token-value"


def hex_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


GOOD_FILE = f"""\
# who may call the order services

writer write,read {hex_of(WRITER_TOKEN)}   # the back office
   reader   read   {hex_of(READER_TOKEN).upper()}
"""


def write(tmp_path: Path, text: str, name: str = "tokens.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- parsing ---------------------------------------------------------------------------------------


def test_comments_blank_lines_and_both_hex_cases(tmp_path: Path) -> None:
    table = TokenTable.load(write(tmp_path, GOOD_FILE))
    assert len(table) == 2
    assert table.names() == ["writer", "reader"]
    assert table.authenticate(WRITER_TOKEN) == Principal("writer", frozenset({"write", "read"}))
    assert table.authenticate(READER_TOKEN) == Principal("reader", frozenset({"read"}))


def test_an_empty_file_is_a_table_with_no_tokens(tmp_path: Path) -> None:
    table = TokenTable.load(write(tmp_path, "# nobody yet\n\n"))
    assert len(table) == 0
    assert table.authenticate(WRITER_TOKEN) is None


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (f"writer write {hex_of('x')} extra", "expected NAME SCOPES SHA256_HEX, found 4 field(s)"),
        ("writer write", "expected NAME SCOPES SHA256_HEX, found 2 field(s)"),
        (f"bad/name write {hex_of('x')}", "a name is 1..64 characters of A-Z a-z 0-9 . _ -"),
        (f"{'n' * 65} write {hex_of('x')}", "a name is 1..64 characters"),
        (f"writer admin {hex_of('x')}", "scopes are a comma list of write and read"),
        (f"writer write, {hex_of('x')}", "scopes are a comma list"),
        (f"writer Write {hex_of('x')}", "scopes are a comma list"),
        ("writer write abc123", "the hash must be 64 hex digits"),
        (f"writer write {hex_of('x')[:-1]}g", "the hash must be 64 hex digits"),
    ],
)
def test_a_bad_line_names_the_file_and_the_line(tmp_path: Path, line: str, says: str) -> None:
    path = write(tmp_path, f"# header\n\nok read {hex_of('ok')}\n{line}\n")
    with pytest.raises(TokenFileError) as raised:
        TokenTable.load(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:4: ")
    assert says in message
    assert "\n" not in message
    assert "writer" not in message and hex_of("x") not in message  # no field is quoted back


def test_a_bad_line_never_quotes_its_fields(tmp_path: Path) -> None:
    # A token pasted where the hash or the name belongs must not come back in the message.
    known = f"{WRITER_TOKEN} read {hex_of('other')}\n"
    for line in [
        f"writer {WRITER_TOKEN}",
        f"{WRITER_TOKEN} read",
        f"writer read {WRITER_TOKEN}",
        f"{WRITER_TOKEN} read nothex",
        known + known,
    ]:
        with pytest.raises(TokenFileError) as raised:
            TokenTable.load(write(tmp_path, line + "\n"))
        assert WRITER_TOKEN not in str(raised.value)


def test_duplicate_names_and_hashes_are_errors(tmp_path: Path) -> None:
    duplicate_name = f"a read {hex_of('1')}\na write {hex_of('2')}\n"
    with pytest.raises(TokenFileError, match=r":2: the name is already used on line 1$"):
        TokenTable.load(write(tmp_path, duplicate_name))
    duplicate_hash = f"a read {hex_of('1')}\n\nb write {hex_of('1').upper()}\n"
    with pytest.raises(TokenFileError, match=r":3: the hash is already used on line 1$"):
        TokenTable.load(write(tmp_path, duplicate_hash))


def test_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=r"^cannot read token file .*missing\.txt: No such file"):
        TokenTable.load(tmp_path / "missing.txt")
    with pytest.raises(TokenFileError, match=r"^cannot read token file"):
        TokenTable.load(tmp_path)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TokenFileError, match=r"binary: not UTF-8 text$"):
        TokenTable.load(binary)


# -- authenticate ----------------------------------------------------------------------------------


def test_unknown_empty_and_near_miss_tokens_are_none(tmp_path: Path) -> None:
    table = TokenTable.load(write(tmp_path, GOOD_FILE))
    for token in ["", "nope", WRITER_TOKEN + " ", WRITER_TOKEN.upper(), hex_of(WRITER_TOKEN), "x" * 10_000]:
        assert table.authenticate(token) is None
    assert table.authenticate(WRITER_TOKEN) is not None  # still, after all those


def test_a_hot_token_is_hashed_once_and_the_cache_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = TokenTable.load(write(tmp_path, GOOD_FILE))
    hashed: list[str] = []
    real_digest = tokens.digest

    def counting_digest(token: str) -> bytes:
        hashed.append(token)
        return real_digest(token)

    monkeypatch.setattr(tokens, "digest", counting_digest)
    for _ in range(100):
        assert table.authenticate(WRITER_TOKEN) is not None
        assert table.authenticate("unknown") is None
    assert hashed == [WRITER_TOKEN, "unknown"]
    for number in range(3 * tokens.CACHE_SIZE):
        assert table.authenticate(f"junk-{number}") is None
    assert len(table._cache) <= tokens.CACHE_SIZE
    assert table.authenticate(WRITER_TOKEN) is not None


# -- the store: reload -----------------------------------------------------------------------------


def test_reload_swaps_in_a_good_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, GOOD_FILE)
    store = TokenStore.open(path)
    assert store.authenticate(READER_TOKEN) == Principal("reader", frozenset({"read"}))
    path.write_text(f"reader write {hex_of(READER_TOKEN)}\n")
    with caplog.at_level(logging.INFO, logger="servicekit.tokens"):
        assert store.reload() is True
    assert store.authenticate(READER_TOKEN) == Principal("reader", frozenset({"write"}))  # no stale cache
    assert store.authenticate(WRITER_TOKEN) is None
    assert [r.getMessage() for r in caplog.records] == [f"reloaded 1 tokens from {path}"]


def test_reload_keeps_the_old_table_when_the_file_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, GOOD_FILE)
    store = TokenStore.open(path)
    before = store.table
    path.write_text(GOOD_FILE + "broken line\n")
    with caplog.at_level(logging.INFO, logger="servicekit.tokens"):
        assert store.reload() is False
    assert store.table is before
    assert store.authenticate(WRITER_TOKEN) is not None
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert "keeping the 2 tokens" in record.getMessage()
    assert f"{path}:5: expected NAME SCOPES SHA256_HEX" in record.getMessage()
    path.unlink()
    assert store.reload() is False
    assert store.authenticate(WRITER_TOKEN) is not None


def test_no_log_line_ever_holds_a_token_or_a_hash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets_ = [WRITER_TOKEN, READER_TOKEN]
    hashes = [hex_of(t) for t in secrets_]
    path = write(tmp_path, GOOD_FILE)
    with caplog.at_level(logging.DEBUG):
        store = TokenStore.open(path)
        for token in [*secrets_, "unknown-token"]:
            store.authenticate(token)
        assert store.reload()
        # Broken versions, one with a token pasted where the hash belongs.
        path.write_text(GOOD_FILE + f"oops read {WRITER_TOKEN}\n")
        assert not store.reload()
        path.write_text(GOOD_FILE + f"{hashes[0]} read {hashes[1]}\n")
        assert not store.reload()
        path.write_text(GOOD_FILE + f"again read {hashes[0]}\n")
        assert not store.reload()
        for token in secrets_:
            store.authenticate(token)
    assert len(caplog.records) >= 5
    for record in caplog.records:
        text = record.getMessage()
        for secret in [*secrets_, *hashes, *(h.upper() for h in hashes)]:
            assert secret not in text, text


# -- the command line ------------------------------------------------------------------------------


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servicekit.tokens", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_new_prints_a_token_and_a_line_that_authenticates_it(tmp_path: Path) -> None:
    result = run_cli("new", "--name", "back-office.1", "--scopes", "read,write")
    assert result.returncode == 0, result.stderr
    token_line, file_line = result.stdout.splitlines()
    label, token = token_line.split()
    assert label == "token:"
    assert len(token) >= 40
    label, line = file_line.split(None, 1)
    assert label == "line:"
    assert line.split()[:2] == ["back-office.1", "write,read"]
    table = TokenTable.load(write(tmp_path, f"# added by hand\n{line}\n"))
    assert table.authenticate(token) == Principal("back-office.1", frozenset({"write", "read"}))

    hashed = run_cli("hash", stdin=token + "\n")
    assert hashed.returncode == 0
    assert hashed.stdout == line.split()[2] + "\n"


def in_process(capsys: pytest.CaptureFixture[str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m servicekit.tokens ARGS`, run in this process."""
    sys.stdin = io.StringIO(stdin)
    try:
        code = tokens.main(list(args))
    except SystemExit as stopped:
        code = int(stopped.code or 0)
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def test_two_new_tokens_differ(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = (in_process(capsys, "new", "--name", "a", "--scopes", "read")[1] for _ in range(2))
    assert first.splitlines()[0] != second.splitlines()[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["new", "--name", "a b", "--scopes", "read"], "argument --name: a name is 1..64 characters"),
        (["new", "--name", "n" * 65, "--scopes", "read"], "argument --name"),
        (["new", "--name", "", "--scopes", "read"], "argument --name"),
        (["new", "--name", "a", "--scopes", "admin"], "argument --scopes: scopes are a comma list"),
        (["new", "--name", "a", "--scopes", ""], "argument --scopes"),
        (["new", "--name", "a", "--scopes", "read,"], "argument --scopes"),
        (["new", "--scopes", "read"], "the following arguments are required: --name"),
        (["new", "--name", "a"], "the following arguments are required: --scopes"),
        ([], "the following arguments are required: COMMAND"),
        (["rotate"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, out, err = in_process(capsys, *args)
    assert code == 2
    assert out == ""
    assert says in err
    assert err.count("\n") == 1, err


def test_help_and_an_empty_hash(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = in_process(capsys, "--help")
    assert code == 0
    assert "new" in out and "hash" in out
    assert in_process(capsys, "new", "--help")[0] == 0
    code, _, err = in_process(capsys, "hash", stdin="\n")
    assert code == 2
    assert err.count("\n") == 1
