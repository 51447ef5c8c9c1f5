"""What the app told its operators during the soak: its metrics, scraped once at the end of
the load, and its JSON log lines, read once gunicorn has stopped (README, "Metrics and logs").

The soak judges both against what the browsers saw and against the database
(soak/verdict.py); this module only gathers them.

The log is gunicorn's standard error (the soak's gunicorn.log): the app's lines, one JSON
object each, and gunicorn's own (`[2026-12-01 16:01:02 +0000] [1234] [INFO] Booting
worker ...`, with the traceback of an ERROR line after it), which are told apart by
their shape. Every other line is one of the app's that is not JSON.

No line may hold a value the browsers held: a refresh or access token, the password, an
email address (soak/observations.py `SecretRecord`), nor the metrics token. Tokens are
looked for by their random parts (a refresh token's MAC, an access token's claims and
signature), so that a line holding one without the rest is caught too.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .app_server import Gunicorn
from .observations import ACCESS_TOKEN, EMAIL, PASSWORD, REFRESH_TOKEN, SecretRecord

METRICS_TOKEN = "metrics token"
# A random part of a token shorter than this is not looked for (none is).
MIN_PIECE = 16
# An address's part before the @ is looked for alone when at least this long (the soak's are).
MIN_LOCAL_PART = 8
# Lines quoted per finding.
QUOTED = 3

_GUNICORN_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[([A-Z]+)\] ")
# What follows a gunicorn ERROR line when it logged an exception.
_TRACEBACK_LINE = re.compile(
    r"^(\s.*|Traceback \(most recent call last\):|During handling of the above exception.*"
    r"|The above exception was the direct cause.*|[A-Za-z_][\w.]*(: .*)?|)$"
)
_WORD = re.compile(r"[A-Za-z0-9_-]+")


# --- metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One scrape of GET /metrics: every sample by name and labels (None: it failed)."""

    status: int
    error: str | None
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]
    # The status of a scrape without the token (it must be refused).
    unauthorised_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        return sum(
            value
            for (sample, sample_labels), value in self.samples.items()
            if sample == name and labels.items() <= dict(sample_labels).items()
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        found: Counter[str] = Counter()
        for (sample, sample_labels), value in self.samples.items():
            if sample == name:
                found[dict(sample_labels).get(label, "")] += value
        return dict(found)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def scrape_metrics(gunicorn: Gunicorn, token: str) -> Scrape:
    """GET /metrics with the token (answered by whichever worker, summed over all of them),
    then once without it."""
    try:
        status, body = gunicorn.get("/metrics", {"Authorization": f"Bearer {token}"})
    except OSError as error:
        return Scrape(0, f"{type(error).__name__}: {error}", {})
    if status != 200:
        return Scrape(status, f"GET /metrics answered {status}", {})
    try:
        samples = parse_metrics(body.decode())
    except ValueError as error:
        return Scrape(status, f"the metrics did not parse: {error}", {})
    try:
        refused, _ = gunicorn.get("/metrics")
    except OSError:
        refused = None
    return Scrape(status, None, samples, unauthorised_status=refused)


# --- the log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    kind: str
    line_number: int
    logger: str  # the JSON line's logger, or "gunicorn" / "not JSON"


@dataclass(frozen=True)
class PlainEntry:
    """Consecutive lines of the app's that are not JSON: one entry (a traceback is many lines)."""

    first_line: int
    lines: int
    text: str  # its first line
    last: str  # its last line (an exception's type and message)


@dataclass(frozen=True)
class LogCheck:
    lines: int
    app_lines: int  # JSON objects
    gunicorn_lines: int  # gunicorn's own, with the tracebacks of its ERROR lines
    not_json: tuple[PlainEntry, ...]  # the app's lines that are not JSON, by entry
    loggers: dict[str, int]  # JSON lines by logger and level ("webapp.request info")
    request_lines: int  # webapp.request lines (one per response)
    app_warnings: tuple[str, ...]  # "logger level: message" of the JSON lines at warning or above
    exceptions: tuple[str, ...]  # the first JSON lines' logged exceptions, whole
    secrets_checked: dict[str, int]  # how many values of each kind were looked for
    leaks: tuple[Leak, ...]
    gunicorn_levels: dict[str, int] = field(default_factory=dict)

    @property
    def not_json_lines(self) -> int:
        return sum(entry.lines for entry in self.not_json)

    @property
    def leaked_kinds(self) -> dict[str, int]:
        return dict(Counter(leak.kind for leak in self.leaks))


def _pieces(kind: str, value: str) -> list[str]:
    """The random parts of a secret that a log line must not hold, alone or together."""
    if kind == REFRESH_TOKEN:
        parts = value.split(".")
        return [parts[2]] if len(parts) == 3 else [value]
    if kind == ACCESS_TOKEN:
        parts = value.split(".")
        # The header is the same for every token; the claims and the signature are not.
        return parts[1:] if len(parts) == 3 else [value]
    if kind == EMAIL:
        # The address's own part ("soak-<run>-<n>"), also when the address is escaped.
        return [value.split("@", 1)[0]]
    return []


def secrets_to_look_for(secrets: Iterable[SecretRecord], metrics_token: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for secret in secrets:
        found.setdefault(secret.kind, set()).add(secret.value)
    found[METRICS_TOKEN] = {metrics_token}
    return found


def check_log(path: Path, secrets: Mapping[str, set[str]]) -> LogCheck:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines()
    # Whole values searched for as they are (few); tokens by their random parts (many).
    whole = [(kind, value) for kind in (EMAIL, PASSWORD, METRICS_TOKEN) for value in secrets.get(kind, ())]
    pieces: dict[str, str] = {}
    for kind in (REFRESH_TOKEN, ACCESS_TOKEN, EMAIL):
        for value in secrets.get(kind, ()):
            for piece in _pieces(kind, value):
                if len(piece) >= (MIN_LOCAL_PART if kind == EMAIL else MIN_PIECE):
                    pieces[piece] = kind

    app_lines = gunicorn_lines = request_lines = 0
    not_json: list[PlainEntry] = []
    loggers: Counter[str] = Counter()
    gunicorn_levels: Counter[str] = Counter()
    app_warnings: list[str] = []
    exceptions: list[str] = []
    leaks: list[Leak] = []
    in_gunicorn_traceback = False
    for number, line in enumerate(lines, start=1):
        source = "not JSON"
        parsed = None
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            app_lines += 1
            in_gunicorn_traceback = False
            source = str(parsed.get("logger"))
            level = str(parsed.get("level"))
            loggers[f"{source} {level}"] += 1
            if source == "webapp.request":
                request_lines += 1
            if level in ("warning", "error", "critical"):
                # The first line of the message, without what varies (ports, ids) past it.
                message = str(parsed.get("message")).splitlines()[0][:120]
                app_warnings.append(f"{source} {level}: {message}")
            if "exception" in parsed and len(exceptions) < 2:
                exceptions.append(f"{parsed.get('message')}\n{parsed['exception']}")
        elif (header := _GUNICORN_LINE.match(line)) is not None:
            gunicorn_lines += 1
            gunicorn_levels[header[1]] += 1
            in_gunicorn_traceback = header[1] in ("ERROR", "CRITICAL", "WARNING")
            source = "gunicorn"
        elif in_gunicorn_traceback and _TRACEBACK_LINE.match(line):
            gunicorn_lines += 1
            source = "gunicorn"
        else:
            in_gunicorn_traceback = False
            previous = not_json[-1] if not_json else None
            if previous is not None and previous.first_line + previous.lines == number:
                # The last line that is not indented: an exception's type and message.
                last = previous.last if line[:1].isspace() else line[:300]
                not_json[-1] = PlainEntry(previous.first_line, previous.lines + 1, previous.text, last)
            else:
                not_json.append(PlainEntry(number, 1, line[:300], line[:300]))
        for kind, value in whole:
            if value in line:
                leaks.append(Leak(kind, number, source))
        for word in _WORD.findall(line):
            if word in pieces:
                leaks.append(Leak(pieces[word], number, source))
    return LogCheck(
        lines=len(lines),
        app_lines=app_lines,
        gunicorn_lines=gunicorn_lines,
        not_json=tuple(not_json),
        loggers=dict(loggers),
        request_lines=request_lines,
        app_warnings=tuple(app_warnings),
        exceptions=tuple(exceptions),
        secrets_checked={kind: len(values) for kind, values in secrets.items()},
        leaks=tuple(leaks),
        gunicorn_levels=dict(gunicorn_levels),
    )


# --- together -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Telemetry:
    scrape: Scrape
    log: LogCheck
    health_checks: int  # the soak's own /healthz answers, which the app counted as responses
