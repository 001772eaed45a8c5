"""Bearer tokens: the token file, who a presented token belongs to, and reloading the file on SIGHUP.

The file keeps only SHA-256 hashes, so reading it never reveals a token. Each line is
`NAME SCOPES SHA256_HEX` (`#` starts a comment), SCOPES a comma list of `write` and `read`.
Nothing here ever logs or reports a token or a hash; an error in the file is reported by file and
line number only. `python -m servicekit.tokens new --name NAME --scopes write,read` makes a token.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

WRITE = "write"
READ = "read"
SCOPES = (WRITE, READ)

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")

# Presented tokens remembered per table, so the hot path costs a dict lookup and no SHA-256.
CACHE_SIZE = 1024
# Longer tokens are still checked, just not remembered (bounds the cache's memory).
_CACHEABLE_LENGTH = 256


class TokenFileError(Exception):
    """The token file cannot be read or has a bad line; the message is one line naming both."""


class Principal(NamedTuple):
    """Who presented a valid token, and what it may do."""

    name: str
    scopes: frozenset[str]


def digest(token: str) -> bytes:
    """The SHA-256 of a token, as the token file stores it (in hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_name(text: str) -> str:
    """A token name: 1..64 characters of A-Z a-z 0-9 . _ -"""
    if not _NAME.fullmatch(text):
        raise ValueError("a name is 1..64 characters of A-Z a-z 0-9 . _ -")
    return text


def parse_scopes(text: str) -> frozenset[str]:
    """A comma list of `write` and `read` (at least one)."""
    items = text.split(",")
    if not all(item in SCOPES for item in items):
        raise ValueError("scopes are a comma list of write and read, e.g. write,read")
    return frozenset(items)


class TokenTable:
    """The tokens of one version of the token file, looked up by the SHA-256 of a presented token."""

    def __init__(self, principals: Mapping[bytes, Principal]) -> None:
        self._principals = dict(principals)
        self._cache: dict[str, Principal | None] = {}

    @classmethod
    def load(cls, path: Path | str) -> TokenTable:
        """Read and check a token file; TokenFileError (one line) if it cannot be read or is malformed."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TokenFileError(f"{path}: not UTF-8 text") from None
        except OSError as error:
            raise TokenFileError(f"cannot read token file {path}: {error.strerror or error}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<token file>") -> TokenTable:
        """The table of a token file's text; `source` names the file in error messages."""
        principals: dict[bytes, Principal] = {}
        names: dict[str, int] = {}
        lines_by_digest: dict[bytes, int] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            fields = raw.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{source}:{number}"
            # Never quote a field back, not even the name: a token pasted into the wrong column
            # must not reach a log. The line number is enough to find it.
            if len(fields) != 3:
                raise TokenFileError(
                    f"{where}: expected NAME SCOPES SHA256_HEX, found {len(fields)} field(s)"
                )
            name, scopes_text, hex_digest = fields
            try:
                parse_name(name)
                scopes = parse_scopes(scopes_text)
            except ValueError as error:
                raise TokenFileError(f"{where}: {error}") from None
            if not _HEX_DIGEST.fullmatch(hex_digest):
                raise TokenFileError(f"{where}: the hash must be 64 hex digits (SHA-256 of the token)")
            key = bytes.fromhex(hex_digest)
            if name in names:
                raise TokenFileError(f"{where}: the name is already used on line {names[name]}")
            if key in lines_by_digest:
                raise TokenFileError(f"{where}: the hash is already used on line {lines_by_digest[key]}")
            names[name] = number
            lines_by_digest[key] = number
            principals[key] = Principal(name, scopes)
        return cls(principals)

    def __len__(self) -> int:
        return len(self._principals)

    def names(self) -> list[str]:
        """The token names, in file order."""
        return [principal.name for principal in self._principals.values()]

    def authenticate(self, token: str) -> Principal | None:
        """The principal a presented token belongs to, or None for an unknown token."""
        try:
            return self._cache[token]
        except KeyError:
            pass
        principal = self._principals.get(digest(token)) if token else None
        if len(token) <= _CACHEABLE_LENGTH:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()  # cheap and thread-safe; hot tokens come back at one hash each
            self._cache[token] = principal
        return principal


class TokenStore:
    """The current table of a token file; `reload()` swaps in a new version only if it is valid."""

    def __init__(self, path: Path, table: TokenTable) -> None:
        self.path = path
        self._table = table

    @classmethod
    def open(cls, path: Path | str) -> TokenStore:
        """Load the file at start-up (TokenFileError if it is bad)."""
        table = TokenTable.load(path)
        log.info("loaded %d tokens from %s", len(table), path)
        return cls(Path(path), table)

    @property
    def table(self) -> TokenTable:
        return self._table

    def reload(self) -> bool:
        """Read the file again; on any error keep the current table, log why, and return False."""
        try:
            table = TokenTable.load(self.path)
        except TokenFileError as error:
            log.error(
                "token file not reloaded, keeping the %d tokens loaded before: %s", len(self._table), error
            )
            return False
        self._table = table  # a fresh table starts with an empty cache
        log.info("reloaded %d tokens from %s", len(table), self.path)
        return True

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a presented token under the current table, or None."""
        return self._table.authenticate(token)


# -- command line ----------------------------------------------------------------------------------


def _name_arg(text: str) -> str:
    try:
        return parse_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _scopes_arg(text: str) -> str:
    try:
        scopes = parse_scopes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return ",".join(scope for scope in SCOPES if scope in scopes)


def _parser() -> argparse.ArgumentParser:
    from servicekit.cli import ArgumentParser  # late: cli imports the server edge, which imports us

    parser = ArgumentParser(
        prog="python -m servicekit.tokens",
        description="Make bearer tokens for --auth-token-file. The file keeps only their SHA-256.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    new = commands.add_parser(
        "new",
        help="print a fresh random token and the line to add to the token file",
        description="Print a fresh random token and its line for the token file. "
        "Give the token to the client; add the line to the file and send the servers SIGHUP.",
    )
    new.add_argument(
        "--name", required=True, type=_name_arg, help="who the token is for: 1..64 of A-Z a-z 0-9 . _ -"
    )
    new.add_argument(
        "--scopes", required=True, type=_scopes_arg, metavar="SCOPES", help="comma list of write and read"
    )
    commands.add_parser(
        "hash",
        help="read a token on stdin, print its SHA-256 hex",
        description="Read one token on stdin (surrounding whitespace ignored) and print its SHA-256 in hex.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`new` or `hash`; a bad flag exits 2 with one line on stderr."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "new":
        token = secrets.token_urlsafe(32)
        print(f"token: {token}")
        print(f"line:  {args.name} {args.scopes} {digest(token).hex()}")
        return 0
    token = sys.stdin.read().strip()
    if not token:
        parser.exit(2, f"{parser.prog} hash: error: no token on stdin\n")
    print(digest(token).hex())
    return 0


if __name__ == "__main__":
    sys.exit(main())
