"""Lab desk users, sessions and the access log, in one SQLite file next to the sample registry.

Passwords are stored as salted scrypt hashes; sessions are random tokens of
which only the SHA-256 is stored, so a copy of this file signs nobody in. The
access log (sign-ins, refusals, exports, label prints) is append-only like the
registry's history; custody changes themselves are in the registry, under the
user's name.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sampling_robot.durable_sqlite import DurableSqlite

log = logging.getLogger(__name__)

ROLES = ("lab", "inspector", "engineer", "admin")
USERS_FILE = "labdesk.sqlite"  # beside the registry's samples.sqlite
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024  # scrypt hashes anything, but nobody types a novel; refusing keeps sign-in cheap
# scrypt cost: 16 MiB and about 50 ms per sign-in on an edge PC (OWASP's minimum is n=2**17 with r=8 for
# servers facing the internet; the desk is on the plant network and signs in a handful of people a shift).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
FAILED_SIGN_IN_LIMIT = 5  # failed sign-ins per user ...
FAILED_SIGN_IN_WINDOW_S = 900.0  # ... within this window lock the user out until the window has passed
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('lab', 'inspector', 'engineer', 'admin')),
    password_hash TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_s REAL NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES users(username),
    csrf_token TEXT NOT NULL,
    created_s REAL NOT NULL,
    last_seen_s REAL NOT NULL,
    remote TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS access_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_s REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    remote TEXT NOT NULL DEFAULT '',
    ok INTEGER NOT NULL DEFAULT 1 CHECK (ok IN (0, 1))
);
CREATE INDEX IF NOT EXISTS access_log_by_who ON access_log (who, action, at_s);
CREATE TRIGGER IF NOT EXISTS access_log_no_update BEFORE UPDATE ON access_log
BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS access_log_no_delete BEFORE DELETE ON access_log
BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS users_no_delete BEFORE DELETE ON users
BEGIN SELECT RAISE(ABORT, 'users are never deleted (their names are in the custody history): deactivate them'); END;
"""


class SignInError(Exception):
    """Sign-in refused; the message is safe to show (it does not tell whether the user exists)."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    active: bool
    created_s: float
    created_by: str


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    created_s: float
    last_seen_s: float


@dataclass(frozen=True)
class AccessEntry:
    id: int
    at_s: float
    who: str
    action: str
    detail: str
    remote: str
    ok: bool


# ---------------------------------------------------------------- passwords


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """'scrypt$n$r$p$salt$hash' with a fresh 16-byte salt; the cost travels with the hash so it can be raised."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True if password matches the stored hash; compares in constant time."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r),
                                p=int(p), maxmem=256 * 1024 * 1024, dklen=len(digest_hex) // 2)
    except ValueError:
        log.error("a stored password hash is malformed (expected scrypt$n$r$p$salt$hash)")
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def check_new_password(username: str, password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password for {username!r} must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password for {username!r} is longer than {MAX_PASSWORD_CHARS} characters")
    if password.strip().lower() == username.lower():
        raise ValueError(f"password for {username!r} must not be the username")


def check_username(username: str) -> str:
    if (not isinstance(username, str) or not 1 <= len(username) <= 64
            or not set(username) <= _USERNAME_CHARS or username[0] in ".-"):
        raise ValueError(f"username {username!r}: use 1-64 of a-z 0-9 . _ - (lower case, starting with a letter, "
                         f"digit or _)")
    return username


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


# A real hash to check against when the user does not exist, so a wrong username costs as much as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


# ---------------------------------------------------------------- the store


class UserStore(DurableSqlite):
    """Users, sessions and the access log; safe to share between the desk's request threads."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time,
                 session_idle_s: float = 4 * 3600.0, session_max_s: float = 12 * 3600.0):
        self.clock = clock
        self.session_idle_s = session_idle_s
        self.session_max_s = session_max_s
        super().__init__(path, _SCHEMA, "lab desk user store")

    @classmethod
    def beside(cls, registry_path: str | Path, **kwargs) -> "UserStore":
        """The store in the registry's folder (labdesk.sqlite next to samples.sqlite)."""
        return cls(Path(registry_path).with_name(USERS_FILE), **kwargs)

    # ------------------------------------------------------------ users

    def add_user(self, username: str, role: str, password: str, *, who: str) -> User:
        check_username(username)
        if role not in ROLES:
            raise ValueError(f"role {role!r} for {username!r} is not one of {', '.join(ROLES)}")
        check_new_password(username, password)
        password_hash = hash_password(password)
        now = self.clock()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise ValueError(f"user {username!r} already exists; use set_password or set_active")
            db.execute("INSERT INTO users (username, role, password_hash, active, created_s, created_by)"
                       " VALUES (?, ?, ?, 1, ?, ?)", (username, role, password_hash, now, who))
            self._log(db, now, who, "add_user", f"{username} as {role}", "", True)
        return self.user(username)

    def set_password(self, username: str, password: str, *, who: str) -> None:
        check_new_password(username, password)
        password_hash = hash_password(password)
        now = self.clock()
        with self._tx() as db:
            self._require_user(db, username)
            db.execute("UPDATE users SET password_hash = ? WHERE username = ?", (password_hash, username))
            db.execute("DELETE FROM sessions WHERE username = ?", (username,))
            self._log(db, now, who, "set_password", username, "", True)

    def set_active(self, username: str, active: bool, *, who: str) -> None:
        now = self.clock()
        with self._tx() as db:
            self._require_user(db, username)
            db.execute("UPDATE users SET active = ? WHERE username = ?", (int(active), username))
            if not active:
                db.execute("DELETE FROM sessions WHERE username = ?", (username,))
            self._log(db, now, who, "activate" if active else "deactivate", username, "", True)

    def user(self, username: str) -> User:
        with self._lock:
            row = self._require_user(self._db, username)
        return _user(row)

    def users(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM users ORDER BY username").fetchall()
        return [_user(r) for r in rows]

    @staticmethod
    def _require_user(db: sqlite3.Connection, username: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise LookupError(f"no lab desk user {username!r}")
        return row

    # ------------------------------------------------------------ sign-in and sessions

    def sign_in(self, username: str, password: str, remote: str = "") -> tuple[str, Session]:
        """A new session token and its session, or SignInError; every attempt goes into the access log."""
        now = self.clock()
        username = (username or "").strip().lower()
        refusal = "wrong username or password"
        with self._lock:
            row = self._db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
            failures = self._db.execute(
                "SELECT COUNT(*) FROM access_log WHERE who = ? AND action = 'sign_in' AND ok = 0 AND at_s > ?",
                (username, now - FAILED_SIGN_IN_WINDOW_S)).fetchone()[0]
        if failures >= FAILED_SIGN_IN_LIMIT:
            # Logged under its own action so that attempts during a lock-out do not prolong it.
            self.log(username or "?", "sign_in_locked", f"{failures} failed sign-ins in "
                     f"{FAILED_SIGN_IN_WINDOW_S:.0f} s", remote, ok=False)
            raise SignInError(f"too many failed sign-ins for {username!r}: wait "
                              f"{FAILED_SIGN_IN_WINDOW_S / 60:.0f} minutes or ask an admin")
        # Always pay for one scrypt, so timing does not tell which usernames exist.
        password_ok = verify_password(password or "", row["password_hash"] if row else _DUMMY_HASH)
        if row is None or not password_ok:
            self.log(username or "?", "sign_in", "refused: " + ("unknown user" if row is None else "wrong password"),
                     remote, ok=False)
            raise SignInError(refusal)
        if not row["active"]:
            self.log(username, "sign_in", "refused: user deactivated", remote, ok=False)
            raise SignInError(f"user {username!r} is deactivated; ask an admin")
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE last_seen_s < ? OR created_s < ?",
                       (now - self.session_idle_s, now - self.session_max_s))
            db.execute("INSERT INTO sessions (token_sha256, username, csrf_token, created_s, last_seen_s, remote)"
                       " VALUES (?, ?, ?, ?, ?, ?)", (_token_hash(token), username, csrf, now, now, remote))
            self._log(db, now, username, "sign_in", "", remote, True)
        return token, Session(_user(row), csrf, now, now)

    def session(self, token: str | None) -> Session | None:
        """The live session of a token, or None if unknown, expired or its user deactivated."""
        if not token:
            return None
        now = self.clock()
        key = _token_hash(token)
        with self._lock:
            row = self._db.execute(
                "SELECT s.*, u.role, u.active, u.created_s AS user_created_s, u.created_by FROM sessions s"
                " JOIN users u ON u.username = s.username WHERE s.token_sha256 = ?", (key,)).fetchone()
            if row is None:
                return None
            if (not row["active"] or row["last_seen_s"] < now - self.session_idle_s
                    or row["created_s"] < now - self.session_max_s):
                with self._tx() as db:
                    db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (key,))
                return None
            if now - row["last_seen_s"] > 60.0:  # one write a minute per session is enough for the idle timeout
                with self._tx() as db:
                    db.execute("UPDATE sessions SET last_seen_s = ? WHERE token_sha256 = ?", (now, key))
        user = User(row["username"], row["role"], bool(row["active"]), row["user_created_s"], row["created_by"])
        return Session(user, row["csrf_token"], row["created_s"], max(row["last_seen_s"], now))

    def sign_out(self, token: str, remote: str = "") -> None:
        session = self.session(token)
        now = self.clock()
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_token_hash(token),))
            if session is not None:
                self._log(db, now, session.user.username, "sign_out", "", remote, True)

    # ------------------------------------------------------------ access log

    def log(self, who: str, action: str, detail: str = "", remote: str = "", *, ok: bool = True) -> None:
        with self._tx() as db:
            self._log(db, self.clock(), who, action, detail, remote, ok)

    @staticmethod
    def _log(db: sqlite3.Connection, at_s: float, who: str, action: str, detail: str, remote: str, ok: bool) -> None:
        db.execute("INSERT INTO access_log (at_s, who, action, detail, remote, ok) VALUES (?, ?, ?, ?, ?, ?)",
                   (at_s, who, action, detail[:2000], remote, int(ok)))

    def access_log(self, limit: int = 200, who: str | None = None, action: str | None = None) -> list[AccessEntry]:
        """Newest first."""
        clauses, params = [], []
        for clause, value in (("who = ?", who), ("action = ?", action)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        sql = f"SELECT * FROM access_log WHERE {' AND '.join(clauses) or '1'} ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*params, limit)).fetchall()
        return [AccessEntry(r["id"], r["at_s"], r["who"], r["action"], r["detail"], r["remote"], bool(r["ok"]))
                for r in rows]


def _user(row: sqlite3.Row) -> User:
    return User(row["username"], row["role"], bool(row["active"]), row["created_s"], row["created_by"])


def add_user(path: str | Path | UserStore, username: str, role: str, password: str, *, who: str = "cli") -> User:
    """Add a lab desk user to the store at `path` (a labdesk.sqlite, or an open UserStore)."""
    if isinstance(path, UserStore):
        return path.add_user(username, role, password, who=who)
    with UserStore(path) as store:
        return store.add_user(username, role, password, who=who)
