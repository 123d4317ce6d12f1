#!/usr/bin/env python3
"""The body of scripts/demo: routes demo/mail/*.eml through a real inbox.

Expects the mail stack to run (scripts/mailstack start) and
target/release/podrouter to be built; scripts/demo does both first.

Steps: make the support user and every pod member (from routing.toml) with
empty mailboxes; write a config that is the shipped routing.toml with its
[inbox], [relay] and [daemon] tables pointed at the stack; APPEND every demo
message to the support INBOX over IMAPS; run `podrouter run` until the
INBOX is empty; stop it with SIGTERM; print where each message went, from
the pod members' mailboxes and the journal.

Standard library only.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import email.utils
import imaplib
import os
import re
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = "support"
REPLACED_TABLES = {"inbox", "relay", "daemon"}
HEADER_RE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"'-]+?)\s*\]\]?\s*(#.*)?$")


def read_env(path: Path) -> dict[str, str]:
    """Reads stack.env (KEY=VALUE lines)."""
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


def pod_members(table: dict) -> dict[str, list[str]]:
    """Pod key -> the local parts of its members' addresses."""
    pods = {}
    for key, pod in table.get("pods", {}).items():
        names = []
        for entry in pod.get("members", []):
            addr = email.utils.parseaddr(entry)[1] or entry
            names.append(addr.split("@", 1)[0].lower())
        pods[key] = names
    return pods


def strip_tables(text: str) -> str:
    """The TOML text without the [inbox], [relay] and [daemon] tables."""
    out, skipping = [], False
    for line in text.splitlines():
        m = HEADER_RE.match(line)
        if m:
            top = m.group(1).split(".", 1)[0].strip("\"'")
            skipping = top in REPLACED_TABLES
        if not skipping:
            out.append(line)
    return "\n".join(out).rstrip() + "\n"


def toml_str(value: str) -> str:
    """A TOML basic string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(work: Path, env: dict[str, str], shipped: Path) -> Path:
    """Writes the demo config and the password file; returns the config."""
    secret = work / "imap.secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(env["PASSWORD"])
    state = work / "state"
    tables = f"""
# ---------------------------------------------------------------- demo
# Written by scripts/demo: the shipped table's [inbox], [relay] and
# [daemon], pointed at the loopback mail stack.

[inbox]
server = "127.0.0.1"
port = {env["IMAPS_PORT"]}
tls = "implicit"
ca_file = {toml_str(env["CA_FILE"])}
user = "{SUPPORT}"
password_file = {toml_str(str(secret))}
folder = "INBOX"
done_folder = "Routed"
hold_folder = "Held"
poll_interval = "5s"

[relay]
server = "127.0.0.1"
port = {env["SMTP_STARTTLS_PORT"]}
tls = "starttls"
ca_file = {toml_str(env["CA_FILE"])}
from = "support@vendor.example"
from_mode = "rewrite"

[daemon]
state_dir = {toml_str(str(state))}
"""
    config = work / "routing.toml"
    config.write_text(strip_tables(shipped.read_text()) + tables)
    return config


def mailstack(*args: str) -> None:
    """Runs scripts/mailstack."""
    subprocess.run([str(ROOT / "scripts" / "mailstack"), *args], check=True,
                   stdout=subprocess.DEVNULL)


def imap_login(env: dict[str, str]) -> imaplib.IMAP4_SSL:
    """An IMAPS session as the support user, verified with the stack's CA."""
    ctx = ssl.create_default_context(cafile=env["CA_FILE"])
    conn = imaplib.IMAP4_SSL("127.0.0.1", int(env["IMAPS_PORT"]), ssl_context=ctx, timeout=30)
    conn.login(SUPPORT, env["PASSWORD"])
    return conn


def inbox_count(conn: imaplib.IMAP4) -> int:
    """Messages in a folder, or -1 when it does not exist."""
    return folder_count(conn, "INBOX")


def folder_count(conn: imaplib.IMAP4, folder: str) -> int:
    """Messages in a folder, or -1 when it does not exist."""
    typ, data = conn.status(folder, "(MESSAGES)")
    if typ != "OK":
        return -1
    m = re.search(rb"MESSAGES (\d+)", data[0])
    return int(m.group(1)) if m else -1


def headers_of(raw: bytes):
    """The top-level header block of a message, parsed."""
    return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)


def message_id(raw: bytes) -> str:
    """The Message-ID without angle brackets, or '' (read from the raw
    header block: it may hold UTF-8, RFC 6532)."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", head)
    m = re.search(rb"^message-id:[ \t]*(.*?)[ \t\r]*$", unfolded, re.I | re.M)
    if not m:
        return ""
    return m.group(1).decode("utf-8", "replace").strip().strip("<>").strip()


def subject_of(raw: bytes) -> str:
    """The decoded Subject, or ''."""
    try:
        return " ".join(str(headers_of(raw).get("Subject", "") or "").split())
    except Exception:
        return ""


def append_all(env: dict[str, str], files: list[Path]) -> None:
    """APPENDs every demo message to the support INBOX."""
    conn = imap_login(env)
    for path in files:
        raw = path.read_bytes()
        when = None
        date = headers_of(raw).get("Date")
        if date is not None and getattr(date, "datetime", None) is not None:
            when = imaplib.Time2Internaldate(date.datetime)
        typ, data = conn.append("INBOX", None, when, raw)
        if typ != "OK":
            sys.exit(f"demo: APPEND of {path.name} failed: {data}")
    n = inbox_count(conn)
    conn.logout()
    print(f"demo: {len(files)} messages in the support INBOX ({n} counted by IMAP)")


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_daemon(binary: Path, config: Path, state: Path, log: Path, env: dict[str, str],
               timeout: float) -> tuple[float | None, int | None]:
    """Runs podrouter until the INBOX is empty; returns (drain seconds, exit code)."""
    conn = imap_login(env)
    child_env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
    with open(log, "wb") as out:
        start = time.monotonic()
        child = subprocess.Popen([str(binary), "run", "-c", str(config), "--state-dir", str(state)],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=child_env)
        drained = None
        try:
            while time.monotonic() - start < timeout:
                if child.poll() is not None:
                    break
                if inbox_count(conn) == 0:
                    drained = time.monotonic() - start
                    break
                time.sleep(0.1)
        finally:
            conn.logout()
            code = stop(child)
    return drained, code


def stop(child: subprocess.Popen) -> int | None:
    """SIGTERM, then at most 30 s for the exit (SIGKILL after that)."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        return child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return None


def journal_rows(state: Path) -> dict[str, dict]:
    """Journal rows by Message-ID (the latest row wins)."""
    path = state / "journal.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    rows = {}
    for row in db.execute("SELECT * FROM messages ORDER BY rowid"):
        row = dict(row)
        mid = (row.get("message_id") or "").strip().strip("<>")
        if mid:
            rows[mid] = row
    db.close()
    return rows


def delivered(mail_root: Path, users: list[str]) -> dict[str, set[str]]:
    """Message-ID -> the users whose INBOX holds it."""
    found: dict[str, set[str]] = {}
    for user in users:
        for sub in ("new", "cur"):
            folder = mail_root / user / "Maildir" / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                try:
                    with open(path, "rb") as f:
                        mid = message_id(f.read(65536))
                except OSError:
                    continue
                if mid:
                    found.setdefault(mid, set()).add(user)
    return found


def wait_deliveries(mail_root: Path, rows: dict[str, dict], pods: dict[str, list[str]],
                    users: list[str], limit: float) -> dict[str, set[str]]:
    """Waits until every relayed message sits in each member's INBOX."""
    want = {mid: set(pods.get(r.get("pod") or "", [])) for mid, r in rows.items()
            if r.get("action") == "relay"}
    deadline = time.monotonic() + limit
    while True:
        got = delivered(mail_root, users)
        if all(want[m] <= got.get(m, set()) for m in want) or time.monotonic() > deadline:
            return got


def outcome(row: dict | None, got: set[str], pods: dict[str, list[str]]) -> tuple[str, bool]:
    """The table cell for one message, and whether it is as it should be."""
    if row is None:
        return "not handled (no journal row)", False
    action, reason = row.get("action"), row.get("reason") or ""
    if action == "relay":
        pod = row.get("pod") or "?"
        members = pods.get(pod, [])
        have = [m for m in members if m in got]
        text = f"pod {pod}: {', '.join(have) or 'nobody yet'}"
        missing = [m for m in members if m not in got]
        if missing:
            text += f" (NOT delivered to {', '.join(missing)})"
        return text + f"  [{row.get('rule') or reason}]", not missing
    folder = row.get("folder") or "(not filed)"
    return f"{folder}: {action}, {reason}", bool(row.get("folder"))


def report(files: list[Path], rows: dict[str, dict], got: dict[str, set[str]],
           pods: dict[str, list[str]]) -> bool:
    """Prints one line per demo message; returns whether all went right."""
    lines, ok = [], True
    for path in files:
        raw = path.read_bytes()
        mid = message_id(raw)
        row = rows.get(mid)
        sender = (row or {}).get("sender") or email.utils.parseaddr(
            str(headers_of(raw).get("From", "")))[1]
        cell, good = outcome(row, got.get(mid, set()), pods)
        ok &= good
        lines.append((path.stem, sender, cell, subject_of(raw)))
    w1 = max(len(line[0]) for line in lines)
    w2 = max(len(line[1]) for line in lines)
    print()
    print(f"{'message':<{w1}}  {'sender':<{w2}}  where it went")
    print(f"{'-' * w1}  {'-' * w2}  {'-' * 40}")
    for name, sender, cell, subject in lines:
        print(f"{name:<{w1}}  {sender:<{w2}}  {cell}")
        print(f"{'':<{w1}}  {'':<{w2}}    subject: {subject[:72]}")
    return ok


def summary(rows: dict[str, dict], n: int, drained: float | None, code: int | None,
            env: dict[str, str]) -> None:
    """Counts per action, drain time and rate, folder counts."""
    counts: dict[str, int] = {}
    for row in rows.values():
        counts[row.get("action")] = counts.get(row.get("action"), 0) + 1
    print()
    print("journal: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if drained is not None:
        print(f"drained {n} messages in {drained:.2f} s ({n / drained:.1f} msg/s), "
              "from process start to an empty INBOX")
    conn = imap_login(env)
    folders = {f: folder_count(conn, f) for f in ("INBOX", "Routed", "Held")}
    conn.logout()
    print("support mailbox now: " + ", ".join(
        f"{f} {c if c >= 0 else '(missing)'}" for f, c in folders.items()))
    print(f"podrouter exit code after SIGTERM: {code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", type=Path, required=True, help="the stack's stack.env")
    parser.add_argument("--config", type=Path, default=ROOT / "routing.toml")
    parser.add_argument("--mail", type=Path, default=ROOT / "demo" / "mail")
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "podrouter")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    env = read_env(args.env)
    files = sorted(args.mail.glob("*.eml"))
    if not files:
        sys.exit(f"demo: no .eml files in {args.mail}")
    pods = pod_members(tomllib.loads(args.config.read_text()))
    members = sorted({m for names in pods.values() for m in names})
    users = [SUPPORT, *members]

    # Fresh, empty mailboxes for the support user and every pod member.
    mailstack("adduser", *users)
    mailstack("reset", *users)
    work = Path(tempfile.mkdtemp(prefix="podrouter-demo."))
    config = write_config(work, env, args.config)
    state, log = work / "state", work / "podrouter.log"
    check = subprocess.run([str(args.binary), "check", "-c", str(config)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"demo: podrouter check rejects {config}:\n{check.stdout}{check.stderr}")
    print(f"demo: config {config} passes podrouter check")

    append_all(env, files)
    print(f"demo: running podrouter (log: {log})")
    drained, code = run_daemon(args.binary, config, state, log, env, args.timeout)
    if drained is None:
        print(f"demo: the INBOX was not empty after {args.timeout:.0f} s; last log lines:")
        print(tail(log))

    rows = journal_rows(state)
    got = wait_deliveries(Path(env["MAIL_ROOT"]), rows, pods, members, 20.0)
    ok = report(files, rows, got, pods)
    summary(rows, len(files), drained, code, env)
    print(f"work folder: {work} (config routing.toml, log, journal in state/)")
    print(f"  look around: {args.binary} log -c {config}   (or trace, held, stats)")
    if drained is None or not ok or code != 0:
        print("demo: FAILED")
        return 1
    print("demo: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
