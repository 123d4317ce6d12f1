#!/usr/bin/env python3
"""The body of scripts/bench: podrouter's daemon against fetchmail and the
raw SMTP ceiling, on the loopback mail stack.

Expects the mail stack to run (scripts/mailstack start), fetchmail to be
installed and target/release/podrouter to be built; scripts/bench does all
three first.

Phases, all in one run:

1. Backlog drain. N generated client messages (default 2,000, ~35 MB:
   90 % 2-20 KB of text, 10 % carrying a 20-200 KB attachment; senders at
   12 clients spread over 3 pods of 4 members) sit in the support INBOX.
   - podrouter: time from process start to an empty INBOX; each message is
     relayed to the 4 members of its pod (one transaction, 4 RCPT).
   - fetchmail: the same backlog in the same INBOX, relayed to the same
     SMTP server (one connection, one RCPT per message: fetchmail forwards
     to one address), time until fetchmail exits with the INBOX empty.
   - ceiling: a plain concurrent SMTP sender (Python smtplib, one thread
     per connection, as many connections as podrouter's relay.connections)
     sending the same messages with the same 4 recipients; and the same
     with 1 connection and 1 recipient (fetchmail's shape).
2. Live pick-up: M messages (default 200) APPENDed at R per second
   (default 5) while the daemon idles in IMAP IDLE; latency from the start
   of each APPEND to the file in the first pod member's Maildir (polled
   every 10 ms), and to the relay's acceptance (the journal's relayed_at).
3. Memory and CPU of the podrouter process: idle RSS (fresh, and after the
   drain), peak RSS (VmHWM), CPU seconds per 1,000 messages drained.

Every time is measured to SMTP acceptance (OpenSMTPD queued it); the
stack's delivery to the Maildirs (LMTP) is waited for between phases so a
phase does not pay for the one before.

Standard library only. Everything runs on 127.0.0.1 with plaintext IMAP
and SMTP (the stack's plain ports), for all three contenders alike.
"""

from __future__ import annotations

import argparse
import base64
import imaplib
import json
import math
import os
import platform
import queue
import random
import re
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "bench-"
SUPPORT = PREFIX + "support"
FETCHMAIL_RCPT = PREFIX + "fm"
PODS = {f"p{p}": [f"{PREFIX}p{p}{m}" for m in "abcd"] for p in (1, 2, 3)}
CLIENTS = 12
SENDERS_PER_CLIENT = 50
MEMBER_DOMAIN = "pods.bench.example"
RELAY_FROM = "support@vendor.bench.example"
TICK = os.sysconf("SC_CLK_TCK")
WORDS = ("printer network password reset portal layer invoice town clerk "
         "council water meter outage ticket screen error login account map "
         "server backup report tax permit license road snow plough update "
         "please thanks regards monday office staff new hire laptop vpn").split()


START = time.monotonic()


def say(text: str) -> None:
    t = int(time.monotonic() - START)
    print(f"bench [{t // 60}:{t % 60:02d}]: {text}", flush=True)


# ------------------------------------------------------------------ stack


def read_env(path: Path) -> dict[str, str]:
    """Reads stack.env (KEY=VALUE lines)."""
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


def mailstack(*args: str) -> None:
    """Runs scripts/mailstack; a reset is tried again after a moment, since
    a Dovecot process that is just logging out may still write a file."""
    for attempt in range(3):
        done = subprocess.run([str(ROOT / "scripts" / "mailstack"), *args],
                              stdout=subprocess.DEVNULL)
        if done.returncode == 0:
            return
        time.sleep(1 + attempt)
    sys.exit(f"bench: scripts/mailstack {args[0]} failed")


def all_users() -> list[str]:
    return [SUPPORT, FETCHMAIL_RCPT, *(m for ms in PODS.values() for m in ms)]


def imap_login(env: dict[str, str]) -> imaplib.IMAP4:
    conn = imaplib.IMAP4("127.0.0.1", int(env["IMAP_PORT"]), timeout=60)
    conn.login(SUPPORT, env["PASSWORD"])
    return conn


def inbox_count(conn: imaplib.IMAP4) -> int:
    typ, data = conn.status("INBOX", "(MESSAGES)")
    m = re.search(rb"MESSAGES (\d+)", data[0]) if typ == "OK" else None
    return int(m.group(1)) if m else -1


def maildir_files(env: dict[str, str], user: str) -> list[str]:
    out = []
    for sub in ("new", "cur"):
        try:
            out.extend(os.listdir(Path(env["MAIL_ROOT"]) / user / "Maildir" / sub))
        except FileNotFoundError:
            pass
    return out


def wait_delivered(env: dict[str, str], users: list[str], want: int, limit: float) -> bool:
    """Waits until the users' INBOXes hold `want` files in all (the stack's
    LMTP delivery after SMTP acceptance)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if sum(len(maildir_files(env, u)) for u in users) >= want:
            return True
        time.sleep(0.2)
    have = sum(len(maildir_files(env, u)) for u in users)
    say(f"warning: only {have} of {want} deliveries arrived within {limit:.0f} s")
    return False


# ------------------------------------------------------------------ messages


@dataclass
class Message:
    sender: str
    pod: str
    raw: bytes
    message_id: str


def client_of(i: int) -> int:
    return i % CLIENTS


def pod_of_client(c: int) -> str:
    return f"p{c % 3 + 1}"


def text_block(rng: random.Random, size: int) -> str:
    lines, n = [], 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12)))
        lines.append(line)
        n += len(line) + 2
    return "\r\n".join(lines)


def make_message(rng: random.Random, tag: str, i: int, size: int, attach: bool) -> Message:
    c = client_of(i)
    sender = f"user{rng.randrange(SENDERS_PER_CLIENT)}@client{c:02d}.bench.example"
    mid = f"{tag}-{i}@client{c:02d}.bench.example"
    head = (f"From: Client {c} <{sender}>\r\n"
            f"To: Support <{RELAY_FROM}>\r\n"
            f"Subject: {tag} {i}: {' '.join(rng.choice(WORDS) for _ in range(4))}\r\n"
            f"Date: Mon, 16 Nov 2026 09:{i // 60 % 60:02d}:{i % 60:02d} -0700\r\n"
            f"Message-ID: <{mid}>\r\n"
            "MIME-Version: 1.0\r\n")
    if not attach:
        body = text_block(rng, max(size - len(head) - 60, 100))
        raw = head + "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body + "\r\n"
        return Message(sender, pod_of_client(c), raw.encode(), mid)
    boundary = f"=_bench_{i}"
    text = text_block(rng, rng.randint(500, 3000))
    blob = base64.encodebytes(rng.randbytes(max(size - len(text) - 600, 1000) * 3 // 4))
    b64 = blob.decode().replace("\n", "\r\n")
    raw = (head + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
           f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n"
           f"--{boundary}\r\nContent-Type: application/pdf; name=\"scan{i}.pdf\"\r\n"
           f"Content-Transfer-Encoding: base64\r\n"
           f"Content-Disposition: attachment; filename=\"scan{i}.pdf\"\r\n\r\n"
           f"{b64}--{boundary}--\r\n")
    return Message(sender, pod_of_client(c), raw.encode(), mid)


def backlog(count: int, total_mb: float, seed: int, tag: str) -> list[Message]:
    """The backlog: 90 % text of 2-20 KB, 10 % with a 20-200 KB
    attachment (log-uniform), scaled so the total is about `total_mb`."""
    rng = random.Random(seed)
    kinds = [i % 10 == 9 for i in range(count)]
    sizes = [math.exp(rng.uniform(math.log(20e3), math.log(200e3))) if a
             else rng.uniform(2e3, 20e3) for a in kinds]
    scale = total_mb * 1e6 / sum(sizes)
    sizes = [min(max(s * scale, 20e3 if a else 2e3), 200e3 if a else 20e3)
             for s, a in zip(sizes, kinds)]
    return [make_message(rng, tag, i, int(s), a) for i, (s, a) in enumerate(zip(sizes, kinds))]


def append_all(env: dict[str, str], msgs: list[Message]) -> float:
    conn = imap_login(env)
    start = time.monotonic()
    for m in msgs:
        typ, data = conn.append("INBOX", None, None, m.raw)
        if typ != "OK":
            sys.exit(f"bench: APPEND failed: {data}")
    took = time.monotonic() - start
    n = inbox_count(conn)
    conn.logout()
    if n != len(msgs):
        sys.exit(f"bench: INBOX holds {n} messages, expected {len(msgs)}")
    return took


# ------------------------------------------------------------------ podrouter


def toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(work: Path, env: dict[str, str], connections: int) -> Path:
    secret = work / "imap.secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(env["PASSWORD"])
    lines = [
        "# Written by scripts/bench.",
        "[inbox]", 'server = "127.0.0.1"', f"port = {env['IMAP_PORT']}", 'tls = "none"',
        f'user = "{SUPPORT}"', f"password_file = {toml_str(str(secret))}",
        'folder = "INBOX"', 'done_folder = "Routed"', 'hold_folder = "Held"',
        'poll_interval = "5s"', "",
        "[relay]", 'server = "127.0.0.1"', f"port = {env['SMTP_PORT']}", 'tls = "none"',
        f'from = "{RELAY_FROM}"', 'from_mode = "rewrite"', f"connections = {connections}", "",
        "[daemon]", f"state_dir = {toml_str(str(work / 'state'))}", "",
    ]
    for pod, members in PODS.items():
        lines += [f"[pods.{pod}]", f'name = "Bench pod {pod}"',
                  "members = [" + ", ".join(f'"{m}@{MEMBER_DOMAIN}"' for m in members) + "]", ""]
    for c in range(CLIENTS):
        lines += [f"[clients.client{c:02d}]", f'name = "Client {c}"',
                  f'pod = "{pod_of_client(c)}"', f'domains = ["client{c:02d}.bench.example"]', ""]
    config = work / "routing.toml"
    config.write_text("\n".join(lines))
    return config


@dataclass
class Proc:
    """Reads a process's memory and CPU from /proc."""
    pid: int

    def status(self, key: str) -> int:
        """A VmXXX line of /proc/PID/status, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def cpu(self) -> float:
        """utime + stime, in seconds."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / TICK


class Daemon:
    """`podrouter run` with its log in the work folder."""

    def __init__(self, binary: Path, config: Path, work: Path, name: str):
        self.log = work / f"podrouter-{name}.log"
        # MALLOC_ARENA_MAX as systemd/podrouter.service sets it, so the RSS
        # measured is the RSS the service has.
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1",
                   MALLOC_ARENA_MAX=os.environ.get("MALLOC_ARENA_MAX", "2"))
        self.out = open(self.log, "wb")
        self.started = time.monotonic()
        self.child = subprocess.Popen([str(binary), "run", "-c", str(config)],
                                      stdin=subprocess.DEVNULL, stdout=self.out,
                                      stderr=subprocess.STDOUT, env=env)
        self.proc = Proc(self.child.pid)

    def wait_ready(self, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                sys.exit(f"bench: podrouter exited early; see {self.log}")
            if b"ready" in self.log.read_bytes():
                return
            time.sleep(0.02)
        sys.exit(f"bench: podrouter not ready after {limit:.0f} s; see {self.log}")

    def stop(self) -> int | None:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        try:
            code = self.child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
            code = None
        self.out.close()
        return code


def idle_rss(binary: Path, config: Path, work: Path) -> int:
    """RSS (KiB) of a fresh daemon idling on an empty INBOX."""
    d = Daemon(binary, config, work, "idle")
    try:
        d.wait_ready()
        time.sleep(2)
        return d.proc.status("VmRSS")
    finally:
        d.stop()


@dataclass
class DrainResult:
    seconds: float
    cpu: float
    hwm_kib: int
    rss_after_kib: int = 0
    daemon: Daemon | None = None


def podrouter_drain(binary: Path, config: Path, work: Path, env: dict[str, str],
                    n: int, limit: float) -> DrainResult:
    conn = imap_login(env)
    d = Daemon(binary, config, work, "drain")
    try:
        while time.monotonic() - d.started < limit:
            if d.child.poll() is not None:
                sys.exit(f"bench: podrouter exited during the drain; see {d.log}")
            if inbox_count(conn) == 0:
                break
            time.sleep(0.05)
        else:
            d.stop()
            sys.exit(f"bench: INBOX not empty after {limit:.0f} s; see {d.log}")
        seconds = time.monotonic() - d.started
        result = DrainResult(seconds, d.proc.cpu(), d.proc.status("VmHWM"), daemon=d)
    except BaseException:
        d.stop()
        raise
    finally:
        conn.logout()
    return result


# ------------------------------------------------------------------ live pick-up


def header_id(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(16384)
    except OSError:
        return None
    m = re.search(rb"^message-id:[ \t]*<([^>\r\n]*)>", head, re.I | re.M)
    return m.group(1).decode() if m else None


def live_pickup(env: dict[str, str], msgs: list[Message], rate: float,
                limit: float) -> tuple[dict[str, float], dict[str, float]]:
    """APPENDs at `rate` per second; returns Message-ID -> APPEND start
    (wall clock) and Message-ID -> seen in the first member's Maildir."""
    watch = {PODS[p][0] for p in PODS}
    dirs = [Path(env["MAIL_ROOT"]) / u / "Maildir" / "new" for u in watch]
    known = {d: set(os.listdir(d)) for d in dirs}
    seen: dict[str, float] = {}
    wanted = {m.message_id for m in msgs}
    done = threading.Event()

    def watcher() -> None:
        while not done.is_set():
            for d in dirs:
                for name in os.listdir(d):
                    if name in known[d]:
                        continue
                    mid = header_id(d / name)
                    if mid is None:
                        continue  # still being written; look again
                    known[d].add(name)
                    if mid in wanted and mid not in seen:
                        seen[mid] = time.time()
            if len(seen) == len(wanted):
                return
            time.sleep(0.01)

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    conn = imap_login(env)
    appended: dict[str, float] = {}
    t0 = time.monotonic()
    for i, m in enumerate(msgs):
        pause = t0 + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        appended[m.message_id] = time.time()
        typ, data = conn.append("INBOX", None, None, m.raw)
        if typ != "OK":
            sys.exit(f"bench: APPEND failed: {data}")
    conn.logout()
    t.join(timeout=limit)
    done.set()
    return appended, seen


def relayed_at(state: Path) -> dict[str, tuple[str, float]]:
    """Message-ID -> (sender, relayed_at as epoch seconds) from the journal."""
    db = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
    out = {}
    for mid, sender, at in db.execute(
            "SELECT message_id, sender, relayed_at FROM messages WHERE relayed_at IS NOT NULL"):
        stamp = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        out[(mid or "").strip("<>")] = (sender, stamp)
    db.close()
    return out


def disturbances(log: Path) -> int:
    """Connection failures in a podrouter log: another user of the shared
    stack stopped or restarted a server, and the figures are off."""
    pattern = re.compile(rb"connection lost|cannot connect|relay failed")
    try:
        return sum(1 for line in log.read_bytes().splitlines() if pattern.search(line))
    except OSError:
        return 0


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def sender_order_kept(msgs: list[Message], journal: dict[str, tuple[str, float]]) -> int:
    """How many pairs of consecutive messages from one sender were relayed
    out of order (relayed_at has millisecond resolution)."""
    last: dict[str, float] = {}
    bad = 0
    for m in msgs:  # APPEND order == UID order
        at = journal.get(m.message_id)
        if at is None:
            continue
        if at[1] < last.get(m.sender, 0.0):
            bad += 1
        last[m.sender] = at[1]
    return bad


# ------------------------------------------------------------------ fetchmail


def fetchmail_drain(env: dict[str, str], work: Path, limit: float) -> tuple[float, int]:
    home = work / "fetchmail"
    home.mkdir(exist_ok=True)
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"set logfile {home / 'fetchmail.log'}\n"
        f"poll 127.0.0.1 service {env['IMAP_PORT']} protocol IMAP auth password\n"
        f"  user \"{SUPPORT}\" password \"{env['PASSWORD']}\" is \"{FETCHMAIL_RCPT}\" here\n"
        f"  smtphost 127.0.0.1/{env['SMTP_PORT']}\n"
        f"  smtpname \"{FETCHMAIL_RCPT}@{MEMBER_DOMAIN}\"\n"
        "  sslproto \"\"\n"
        "  nokeep fetchall\n")
    rc.chmod(0o600)
    cmd = ["fetchmail", "-f", str(rc), "--pidfile", str(home / "pid"),
           "-i", str(home / "ids"), "--nodetach"]
    fenv = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    start = time.monotonic()
    with open(home / "stdout.log", "wb") as out:
        try:
            code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=fenv, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            sys.exit(f"bench: fetchmail did not finish within {limit:.0f} s; see {home}")
    return time.monotonic() - start, code


# ------------------------------------------------------------------ ceiling


def smtp_ceiling(env: dict[str, str], msgs: list[Message], connections: int,
                 one_rcpt: bool) -> float:
    """Seconds to send every message over `connections` SMTP sessions."""
    work: queue.Queue[Message] = queue.Queue()
    for m in msgs:
        work.put(m)
    errors: list[str] = []

    def sender() -> None:
        s = smtplib.SMTP("127.0.0.1", int(env["SMTP_PORT"]), timeout=60)
        s.ehlo("bench.localhost")
        while True:
            try:
                m = work.get_nowait()
            except queue.Empty:
                break
            rcpts = ([f"{FETCHMAIL_RCPT}@{MEMBER_DOMAIN}"] if one_rcpt
                     else [f"{u}@{MEMBER_DOMAIN}" for u in PODS[m.pod]])
            try:
                s.sendmail(RELAY_FROM, rcpts, m.raw)
            except smtplib.SMTPException as e:
                errors.append(str(e))
        s.quit()

    threads = [threading.Thread(target=sender) for _ in range(connections)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    if errors:
        sys.exit(f"bench: the SMTP sender failed: {errors[:3]}")
    return took


# ------------------------------------------------------------------ report


def load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    return Path("/proc/loadavg").read_text().split()[0]


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    return f"{os.cpu_count()} CPUs ({cpu}), {mem / 1024:.1f} GiB RAM, Linux {platform.release()}"


@dataclass
class Results:
    rows: list[tuple[str, str]] = field(default_factory=list)
    ok: bool = True

    def add(self, what: str, value: str, target: str = "", met: bool | None = None) -> None:
        mark = "" if met is None else (" ✓" if met else " ✗ (target " + target + ")")
        if met is False:
            self.ok = False
        self.rows.append((what, value + mark))
        print(f"  {what:<52} {value}{mark}", flush=True)

    def markdown(self) -> str:
        out = ["| what | result |", "|---|---|"]
        out += [f"| {w} | {v} |" for w, v in self.rows]
        return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", type=Path, required=True, help="the stack's stack.env")
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "podrouter")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--megabytes", type=float, default=35.0)
    parser.add_argument("--connections", type=int, default=4, help="relay.connections")
    parser.add_argument("--live", type=int, default=200, help="messages in the live phase")
    parser.add_argument("--rate", type=float, default=5.0, help="live APPENDs per second")
    parser.add_argument("--skip-fetchmail", action="store_true")
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()

    env = read_env(args.env)
    users = all_users()
    members = [m for ms in PODS.values() for m in ms]
    mailstack("adduser", *users)
    mailstack("reset", *users)
    work = Path(tempfile.mkdtemp(prefix="podrouter-bench."))
    config = write_config(work, env, args.connections)
    check = subprocess.run([str(args.binary), "check", "-c", str(config)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"bench: podrouter check rejects {config}:\n{check.stdout}{check.stderr}")

    run_tag = f"b{os.getpid()}x{int(time.time())}"
    msgs = backlog(args.messages, args.megabytes * args.messages / 2000, 1, run_tag)
    total = sum(len(m.raw) for m in msgs)
    big = sum(1 for i, _ in enumerate(msgs) if i % 10 == 9)
    say(f"machine: {machine()}; load average {load()}")
    say(f"backlog: {len(msgs)} messages, {total / 1e6:.1f} MB, {big} with attachments; "
        f"{CLIENTS} clients in {len(PODS)} pods of 4; work folder {work}")
    res = Results()
    figures: dict[str, float] = {"messages": len(msgs), "bytes": total}

    load_start = load()

    # Idle, fresh.
    rss_fresh = idle_rss(args.binary, config, work)

    # 1a. podrouter drain.
    took = append_all(env, msgs)
    say(f"appended the backlog in {took:.1f} s; podrouter draining")
    drain = podrouter_drain(args.binary, config, work, env, len(msgs), 240)
    pr_rate = len(msgs) / drain.seconds
    say(f"podrouter drained in {drain.seconds:.2f} s; waiting for the stack's deliveries")
    wait_delivered(env, members, 4 * len(msgs), 240)
    daemon = drain.daemon
    assert daemon is not None
    time.sleep(2)
    rss_after = daemon.proc.status("VmRSS")
    journal = relayed_at(work / "state")
    relayed = sum(1 for m in msgs if m.message_id in journal)
    out_of_order = sender_order_kept(msgs, journal)

    # 1b. The raw SMTP ceiling right after, on the same stack state (the
    # daemon idles meanwhile).
    ceil_rate = None
    if not args.skip_ceiling:
        mailstack("reset", *members)
        say(f"raw SMTP sender, {args.connections} connections, 4 recipients")
        ceil_rate = len(msgs) / smtp_ceiling(env, msgs, args.connections, False)
        wait_delivered(env, members, 4 * len(msgs), 240)

    # 2. Live pick-up, same daemon, idling.
    live_msgs = backlog(args.live, args.megabytes * args.live / 2000, 2,
                        run_tag + "-live") if args.live else []
    lat_ms: list[float] = []
    acc_ms: list[float] = []
    if live_msgs:
        say(f"live pick-up: {len(live_msgs)} messages at {args.rate:g}/s")
        cpu_before_live = daemon.proc.cpu()
        appended, seen = live_pickup(env, live_msgs, args.rate, 60)
        live_cpu = daemon.proc.cpu() - cpu_before_live
        journal = relayed_at(work / "state")
        lat_ms = [(seen[k] - appended[k]) * 1000 for k in appended if k in seen]
        acc_ms = [(journal[k][1] - appended[k]) * 1000 for k in appended if k in journal]
        missing = len(appended) - len(lat_ms)
        if missing:
            say(f"warning: {missing} live messages never reached the pod mailbox")
    hwm = daemon.proc.status("VmHWM")
    code = daemon.stop()

    # 1c. fetchmail.
    fm_rate = None
    if not args.skip_fetchmail:
        mailstack("reset", SUPPORT, FETCHMAIL_RCPT)
        append_all(env, msgs)
        say("fetchmail draining the same backlog")
        fm_secs, fm_code = fetchmail_drain(env, work, 400)
        conn = imap_login(env)
        left = inbox_count(conn)
        conn.logout()
        if fm_code not in (0, 1) or left != 0:
            say(f"warning: fetchmail exit {fm_code}, {left} messages left; see {work}/fetchmail")
            res.add("fetchmail drain", f"failed: exit {fm_code}, {left} left", "a full drain",
                    False)
        else:
            fm_rate = len(msgs) / fm_secs
        wait_delivered(env, [FETCHMAIL_RCPT], len(msgs) - left, 240)

    # 1d. The raw SMTP ceiling in fetchmail's shape.
    ceil1_rate = None
    if not args.skip_ceiling:
        mailstack("reset", FETCHMAIL_RCPT)
        say("raw SMTP sender, 1 connection, 1 recipient")
        ceil1_rate = len(msgs) / smtp_ceiling(env, msgs, 1, True)
        wait_delivered(env, [FETCHMAIL_RCPT], len(msgs), 240)

    print()
    say("results")
    res.add("backlog", f"{len(msgs)} messages, {total / 1e6:.1f} MB")
    res.add("load average (1 min) at start / end", f"{load_start} / {load()}")
    res.add(f"podrouter drain ({args.connections} SMTP connections, 4 rcpt)",
            f"{drain.seconds:.1f} s, {pr_rate:.1f} msg/s")
    figures |= {"podrouter_s": drain.seconds, "podrouter_msg_s": pr_rate}
    if fm_rate is not None:
        res.add("fetchmail drain (1 connection, 1 rcpt)",
                f"{len(msgs) / fm_rate:.1f} s, {fm_rate:.1f} msg/s")
        figures["fetchmail_msg_s"] = fm_rate
    if ceil_rate is not None and ceil1_rate is not None:
        res.add(f"raw SMTP ceiling ({args.connections} connections, 4 rcpt)",
                f"{len(msgs) / ceil_rate:.1f} s, {ceil_rate:.1f} msg/s")
        res.add("raw SMTP, 1 connection, 1 rcpt (fetchmail's shape)", f"{ceil1_rate:.1f} msg/s")
        figures |= {"ceiling_msg_s": ceil_rate, "ceiling1_msg_s": ceil1_rate}
        res.add("podrouter / ceiling", f"{pr_rate / ceil_rate:.2f}", "≥ 0.80",
                pr_rate / ceil_rate >= 0.8)
    if fm_rate is not None:
        res.add("podrouter / fetchmail", f"{pr_rate / fm_rate:.1f}×", "≥ 6×", pr_rate / fm_rate >= 6)
    res.add("relayed per the journal", f"{relayed} of {len(msgs)}", "all", relayed == len(msgs))
    res.add("same-sender pairs relayed out of order", str(out_of_order), "0", out_of_order == 0)
    if lat_ms:
        p50, p99, mx = percentile(lat_ms, .5), percentile(lat_ms, .99), max(lat_ms)
        res.add(f"live pick-up, APPEND → pod Maildir, p50 ({len(lat_ms)} msgs at {args.rate:g}/s)",
                f"{p50:.0f} ms", "< 300 ms", p50 < 300)
        res.add("live pick-up, p99", f"{p99:.0f} ms", "< 1000 ms", p99 < 1000)
        res.add("live pick-up, max", f"{mx:.0f} ms")
        if acc_ms:
            res.add("  of which APPEND → relay accepted (journal), p50 / p99",
                    f"{percentile(acc_ms, .5):.0f} / {percentile(acc_ms, .99):.0f} ms")
        figures |= {"live_p50_ms": p50, "live_p99_ms": p99, "live_max_ms": mx}
        if len(lat_ms) < len(live_msgs):
            res.add("live messages delivered", f"{len(lat_ms)} of {len(live_msgs)}", "all", False)
    res.add("idle RSS, fresh start", f"{rss_fresh / 1024:.1f} MiB", "< 15 MiB",
            rss_fresh < 15 * 1024)
    res.add("idle RSS after the drain", f"{rss_after / 1024:.1f} MiB", "< 15 MiB",
            rss_after < 15 * 1024)
    res.add("peak RSS (VmHWM, drain and live)", f"{hwm / 1024:.1f} MiB", "< 64 MiB",
            hwm < 64 * 1024)
    res.add("CPU per 1,000 messages drained (utime+stime)",
            f"{drain.cpu / len(msgs) * 1000:.2f} s")
    if lat_ms:
        res.add("CPU while live (200 msgs over ~40 s)", f"{live_cpu:.2f} s")
    res.add("podrouter exit code after SIGTERM", str(code), "0", code == 0)
    troubles = disturbances(daemon.log)
    res.add("connection failures in podrouter's log (stack restarted by someone?)",
            str(troubles), "0", troubles == 0)
    figures |= {"idle_rss_kib": rss_fresh, "idle_rss_after_kib": rss_after, "hwm_kib": hwm,
                "cpu_s_per_1000": drain.cpu / len(msgs) * 1000}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(f"Machine: {machine()}\n\n{res.markdown()}\n")
    mailstack("reset", *users)
    say(f"work folder (configs, logs, journal): {work}")
    say("all targets met" if res.ok else "some targets missed")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
