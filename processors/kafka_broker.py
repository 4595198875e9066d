"""Local single-node Apache Kafka broker (KRaft, broker+controller) run from Maven Central jars.

Used whenever ``LEDGER_KAFKA_BOOTSTRAP`` is unset (SPEC §2, "Embedded default"):

* the broker jars are fetched once with Maven into a cache directory (``LEDGER_HOME``, default
  ``$XDG_CACHE_HOME/ledger`` or ``~/.cache/ledger``), atomically, marked with the version;
* the broker's config, logs and data live under the data directory (``LEDGER_DATA_DIR``, default
  ``$XDG_DATA_HOME/ledger`` or ``~/.local/share/ledger``) in ``kafka/``;
* the JVM runs detached from the caller and is described by ``kafka/broker.json`` so that later
  ``ledger`` invocations can report on it, reuse it and stop it.

Every expected failure (no Java, no Maven, port taken, broker died) raises :class:`BrokerError`
with a one-line message fit for a CLI.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerInfo",
    "BrokerStatus",
    "LocalBroker",
    "bootstrap_pid",
    "default_data_dir",
    "default_home",
    "ensure_broker",
    "listener_pid",
]

log = logging.getLogger("ledger.kafka")

# One pinned version for every org.apache.kafka artifact (mixing versions breaks the broker).
KAFKA_VERSION = "4.1.1"
SCALA_BINARY_VERSION = "2.13"
# kafka_2.13:4.1.1 pulls log4j-core 2.24.3 and slf4j-api 1.7.36 (mvn dependency:tree), but no
# SLF4J binding: without one the broker logs nothing. log4j-slf4j-impl is the 1.7.x binding.
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.7.1"
MIN_JAVA_MAJOR = 17

DEFAULT_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 30.0
DOWNLOAD_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 20

ENV_BOOTSTRAP = "LEDGER_KAFKA_BOOTSTRAP"
ENV_HOME = "LEDGER_HOME"
ENV_DATA_DIR = "LEDGER_DATA_DIR"
ENV_PORT = "LEDGER_KAFKA_PORT"
ENV_CONTROLLER_PORT = "LEDGER_KAFKA_CONTROLLER_PORT"
ENV_JAVA_OPTS = "LEDGER_KAFKA_JAVA_OPTS"

HEAP_OPTS = ("-Xms256m", "-Xmx512m")
# Kafka's own kafka-run-class.sh defaults; none is required, all help a small shared machine.
JVM_OPTS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    # A broker that ran out of heap is broken in subtle ways: better dead and visible.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"


class BrokerError(RuntimeError):
    """An expected failure of the local broker, with a message meant for the user."""


@dataclass(frozen=True)
class BrokerInfo:
    """What ``start()`` did: where the broker is and whether an existing one was reused."""

    bootstrap: str
    pid: int
    port: int
    controller_port: int
    log_file: str
    data_dir: str
    reused: bool
    startup_s: float


@dataclass(frozen=True)
class BrokerStatus:
    """What ``status()`` found; ``running`` means the process is alive and answers metadata."""

    state_file: str
    has_state: bool
    pid: int | None
    pid_alive: bool
    answers: bool
    bootstrap: str | None
    port: int | None
    controller_port: int | None
    log_file: str | None
    data_dir: str
    kafka_version: str | None
    started_at: float | None

    @property
    def running(self) -> bool:
        return self.pid_alive and self.answers

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "running": self.running}


# --------------------------------------------------------------------------------------------
# Locations and environment


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def default_home() -> Path:
    """Cache directory for downloaded jars: LEDGER_HOME, else the user's cache dir + /ledger."""
    explicit = _env_path(ENV_HOME)
    if explicit is not None:
        return explicit
    xdg = _env_path("XDG_CACHE_HOME")
    return (xdg if xdg is not None else Path.home() / ".cache") / "ledger"


def default_data_dir() -> Path:
    """Data directory: LEDGER_DATA_DIR, else the user's data dir + /ledger."""
    explicit = _env_path(ENV_DATA_DIR)
    if explicit is not None:
        return explicit
    xdg = _env_path("XDG_DATA_HOME")
    return (xdg if xdg is not None else Path.home() / ".local" / "share") / "ledger"


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise BrokerError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise BrokerError(f"{name}={raw!r} is not a port number (1-65535)")
    return port


def ensure_broker() -> str:
    """Return a bootstrap string: LEDGER_KAFKA_BOOTSTRAP if set, else the local broker's.

    Starts the local broker when it is not running, reuses it when it is.
    """
    bootstrap = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if bootstrap:
        return bootstrap
    return LocalBroker().start().bootstrap


# --------------------------------------------------------------------------------------------
# Small helpers


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock: serialises downloads and start/stop across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temp file + rename so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """Last lines of a (possibly large, possibly missing) text file."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def _port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port.

    SO_REUSEADDR mirrors what the JVM does, so TIME_WAIT leftovers do not count as "taken".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _port_accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def listener_pid(port: int) -> int | None:
    """Best effort: the pid listening on a TCP port (needs privileges for others' sockets)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return int(conn.pid) if conn.pid else None
    except (psutil.Error, OSError):
        return None
    return None


def bootstrap_pid(bootstrap: str) -> int | None:
    """The pid of the broker at the first bootstrap address when it runs on this machine
    (what the benchmarks meter), else None."""
    port = bootstrap.split(",")[0].rsplit(":", 1)[-1]
    return listener_pid(int(port)) if port.isdigit() else None


def _describe_pid(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        return f"pid {pid} ({proc.name()})"
    except psutil.Error:
        return f"pid {pid}"


def _process_alive(pid: int, create_time: float | None) -> bool:
    """Alive, not a zombie, and (when known) the same process we started, not a reused pid."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except psutil.Error:
        return False


def _broker_answers(bootstrap: str, timeout_s: float) -> bool:
    """True when a broker at `bootstrap` returns cluster metadata with at least one broker."""
    host, _, port = bootstrap.rpartition(":")
    # Probe TCP first: it is cheap and keeps librdkafka from logging connection-refused noise.
    if not _port_accepts(host, int(port), timeout_s=min(timeout_s, 1.0)):
        return False
    from confluent_kafka.admin import AdminClient  # imported lazily: heavy, not always needed

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": max(1000, int(timeout_s * 1000)),
        # Routed through logging (silenced by the CLI) instead of librdkafka's raw stderr.
        "logger": logging.getLogger("ledger.kafka.librdkafka"),
    }
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except Exception:  # KafkaException on timeout/transport errors: "not answering yet"
        return False
    return len(metadata.brokers) > 0


def _kafka_cluster_id() -> str:
    """A random id in Kafka's canonical Uuid text form (base64url of 16 bytes, no padding).

    Like Kafka's Uuid.randomUuid(), never starting with "-": StorageTool's argument parser
    would take such an id for an option and the format would fail (1 run in 64).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


# --------------------------------------------------------------------------------------------
# Java and jars


def _find_java(env: Mapping[str, str] | None = None) -> str:
    """Path of a Java >= 17 executable (JAVA_HOME first, then PATH) or a BrokerError."""
    environ = os.environ if env is None else env
    java_home = environ.get("JAVA_HOME", "").strip()
    candidate: str | None = None
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        candidate = str(Path(java_home) / "bin" / "java")
    if candidate is None:
        candidate = shutil.which("java", path=environ.get("PATH", os.defpath))
    if candidate is None:
        raise BrokerError(
            f"Java {MIN_JAVA_MAJOR}+ is required to run the local Kafka broker, but no `java` "
            "was found on PATH (or in JAVA_HOME); install a JDK/JRE 17+ or set "
            f"{ENV_BOOTSTRAP} to an existing broker"
        )
    major = _java_major(candidate)
    if major < MIN_JAVA_MAJOR:
        raise BrokerError(
            f"Java {MIN_JAVA_MAJOR}+ is required by Kafka {KAFKA_VERSION}, but {candidate} is "
            f"Java {major}; install Java {MIN_JAVA_MAJOR}+ or point JAVA_HOME at one"
        )
    return candidate


def _java_major(java: str) -> int:
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"cannot run {java} -version: {exc}") from None
    output = proc.stderr + proc.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if proc.returncode != 0 or match is None:
        first = output.strip().splitlines()[:1]
        raise BrokerError(f"cannot determine the Java version of {java}: {first}")
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_…".
    return int(match.group(2) or 0) if major == 1 else major


def _pom_xml(kafka_version: str) -> str:
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_BINARY_VERSION}", kafka_version),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by the ledger to fetch the Kafka broker jars; safe to delete. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ledger</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


# --------------------------------------------------------------------------------------------
# Broker config files


def _server_properties(
    *, port: int, controller_port: int, log_dir: Path, host: str = "127.0.0.1"
) -> str:
    settings: dict[str, str | int] = {
        # Combined broker+controller on loopback, KIP-853 dynamic quorum (format --standalone).
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        # Single node: internal topics cannot have more than one replica, or
        # init_transactions() and group coordination time out.
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "share.coordinator.state.topic.num.partitions": 4,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        # Ledger topics are created explicitly with their partition count (SPEC §2 default 8).
        "auto.create.topics.enable": "false",
        "num.partitions": 8,
        # No 3 s wait before the first rebalance of a group: a single local user gains nothing.
        "group.initial.rebalance.delay.ms": 0,
        # The log is the ledger's source of truth: never delete it by age behind the user's back.
        "log.retention.ms": -1,
        # Producers may ask for anything from short (tests, fast zombie expiry) to 15 min.
        "transaction.max.timeout.ms": 900_000,
        # Abort expired transactions of crashed producers promptly (default 10 s scan).
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": 5_000,
        # KIP-890's check that each transactional write belongs to an ongoing transaction is one
        # more round trip to the coordinator per partition of every transaction, and a
        # processor's transaction writes ~9 partitions one after another: the p50 at 2,000
        # requests/s is 22-24 ms with it and ~16 ms without (docs/BENCHMARKS.md). What it
        # guards against is a late write of an aborted transaction reopening it. The ledger's
        # one transactional client never aborts: after a failure the processor replaces the
        # producer, whose epoch bump makes the partitions refuse whatever the old one still had
        # in flight (processors/service.py, tests/pipeline/test_recovery.py). A broker of your
        # own keeps Kafka's default (on), and the ledger works the same there, slower.
        "transaction.partition.verification.enable": "false",
        # Sized for a laptop / 2-core CI box rather than a production server.
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.threads": 1,
        # The cleaner allocates this at start-up; the 128 MiB default OOMs a 512 MiB heap.
        "log.cleaner.dedupe.buffer.size": 32 * 1024 * 1024,
    }
    lines = ["# Generated by the ledger (processors/kafka_broker.py); rewritten on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _log4j2_properties(logs_dir: Path) -> str:
    # A .properties config needs no extra jar (YAML would need jackson-dataformat-yaml).
    pattern = "[%d] %p %m (%c)%n"
    return f"""# Generated by the ledger; rewritten on every start.
status = warn
name = ledger-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs_dir}/server.log
appender.file.filePattern = {logs_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = {pattern}
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 5
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
# Per-request and state-change chatter is useless for a local single-node broker.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
"""


def _tool_log4j2_properties() -> str:
    # One-shot tools (StorageTool) log to stderr, which we capture for error messages.
    return """status = warn
name = ledger-kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
"""


# --------------------------------------------------------------------------------------------
# The broker


# Popen handles of brokers started by this process; kept so they are reaped (no zombies) and
# so Python does not warn about "subprocess still running" when a handle is collected.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LocalBroker:
    """A single-node KRaft Kafka broker in a detached JVM, described by a state file.

    Arguments default to the environment (LEDGER_HOME, LEDGER_DATA_DIR, LEDGER_KAFKA_PORT,
    LEDGER_KAFKA_CONTROLLER_PORT). Jars live under ``home``; everything else under
    ``data_dir/kafka``: ``server.properties``, ``data/`` (the log dir), ``logs/``, and
    ``broker.json`` (pid, ports, bootstrap, log file).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        home: Path | str | None = None,
        data_dir: Path | str | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        kafka_version: str = KAFKA_VERSION,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        self.data_dir = base.absolute()
        self.port = port if port is not None else _env_port(ENV_PORT, DEFAULT_PORT)
        self.controller_port = (
            controller_port
            if controller_port is not None
            else _env_port(ENV_CONTROLLER_PORT, DEFAULT_CONTROLLER_PORT)
        )
        if self.port == self.controller_port:
            raise BrokerError(
                f"the client port and the controller port are both {self.port}; "
                f"set {ENV_PORT} and {ENV_CONTROLLER_PORT} to two different ports"
            )
        self.kafka_version = kafka_version
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s

    # ---- paths --------------------------------------------------------------------------

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def log_dir(self) -> Path:
        """Kafka's log.dirs: the topic data."""
        return self.kafka_dir / "data"

    @property
    def logs_dir(self) -> Path:
        """The broker's own log files."""
        return self.kafka_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def jvm_output_file(self) -> Path:
        """JVM stdout/stderr: crashes before log4j is up, OOMs, log4j's own errors."""
        return self.logs_dir / "jvm.out"

    @property
    def state_file(self) -> Path:
        return self.kafka_dir / "broker.json"

    @property
    def server_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.kafka_dir / "log4j2.properties"

    @property
    def jar_dir(self) -> Path:
        return self.home / f"kafka-{self.kafka_version}"

    @property
    def libs_dir(self) -> Path:
        return self.jar_dir / "libs"

    @property
    def marker_file(self) -> Path:
        return self.jar_dir / "COMPLETE"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- public API -------------------------------------------------------------------

    def start(self) -> BrokerInfo:
        """Start the broker, or reuse the one already running on this data dir."""
        t0 = time.monotonic()
        with _file_lock(self.kafka_dir / ".lock"):
            state = self._read_state()
            if state is not None:
                reused = self._reuse(state, t0)
                if reused is not None:
                    return reused
            java = _find_java()
            self._check_ports_free()
            self.ensure_jars()
            self._write_configs()
            self._format_storage(java)
            return self._launch(java, t0)

    def stop(self) -> bool:
        """Stop the broker gracefully (SIGTERM, then SIGKILL after stop_timeout_s).

        Returns True when a running broker was stopped, False when none was running.
        """
        if not self.state_file.exists():
            return False
        with _file_lock(self.kafka_dir / ".lock"):
            state = self._read_state()
            if state is None:
                return False
            pid = int(state["pid"])
            alive = _process_alive(pid, state.get("create_time"))
            if alive:
                self._terminate(pid)
            self._remove_state()
            return alive

    def status(self, *, probe_timeout_s: float = 3.0) -> BrokerStatus:
        """Describe the broker of this data dir without changing anything."""
        state = self._read_state()
        if state is None:
            return BrokerStatus(
                state_file=str(self.state_file),
                has_state=False,
                pid=None,
                pid_alive=False,
                answers=False,
                bootstrap=None,
                port=None,
                controller_port=None,
                log_file=str(self.log_file),
                data_dir=str(self.data_dir),
                kafka_version=None,
                started_at=None,
            )
        pid = int(state["pid"])
        alive = _process_alive(pid, state.get("create_time"))
        bootstrap = str(state["bootstrap"])
        return BrokerStatus(
            state_file=str(self.state_file),
            has_state=True,
            pid=pid,
            pid_alive=alive,
            answers=alive and _broker_answers(bootstrap, probe_timeout_s),
            bootstrap=bootstrap,
            port=int(state["port"]),
            controller_port=int(state["controller_port"]),
            log_file=str(state.get("log_file", self.log_file)),
            data_dir=str(self.data_dir),
            kafka_version=state.get("kafka_version"),
            started_at=state.get("started_at"),
        )

    def ensure_jars(self) -> Path:
        """Fetch the broker jars into the cache once; return the libs directory.

        Maven writes into a temporary sibling directory that is renamed into place only after
        it completed, so an interrupted download is never mistaken for a complete one.
        """
        if self._jars_complete():
            return self.libs_dir
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.home / f".kafka-{self.kafka_version}.lock"):
            if self._jars_complete():  # another process finished it while we waited
                return self.libs_dir
            mvn = shutil.which("mvn")
            if mvn is None:
                raise BrokerError(
                    "Maven (`mvn`) is required once to fetch the Kafka broker jars from Maven "
                    f"Central into {self.home}, but it is not on PATH; install Maven or set "
                    f"{ENV_BOOTSTRAP} to an existing broker"
                )
            if self.jar_dir.exists():  # incomplete leftovers from an older layout or a crash
                shutil.rmtree(self.jar_dir)
            for stale in self.home.glob(f".kafka-{self.kafka_version}-download-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(
                tempfile.mkdtemp(dir=self.home, prefix=f".kafka-{self.kafka_version}-download-")
            )
            try:
                self._maven_fetch(mvn, tmp)
                (tmp / "COMPLETE").write_text(
                    f"org.apache.kafka:kafka_{SCALA_BINARY_VERSION}:{self.kafka_version}\n"
                )
                os.rename(tmp, self.jar_dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self.libs_dir

    # ---- internals --------------------------------------------------------------------

    def _jars_complete(self) -> bool:
        try:
            marker = self.marker_file.read_text().strip()
        except OSError:
            return False
        return marker.endswith(f":{self.kafka_version}") and any(self.libs_dir.glob("*.jar"))

    def _maven_fetch(self, mvn: str, workdir: Path) -> None:
        pom = workdir / "pom.xml"
        pom.write_text(_pom_xml(self.kafka_version))
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={workdir / 'libs'}",
            "-DincludeScope=runtime",
        ]
        log.info(
            "fetching Kafka %s jars from Maven Central into %s (once)",
            self.kafka_version,
            self.home,
        )
        try:
            proc = subprocess.run(
                cmd,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=DOWNLOAD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BrokerError(
                f"fetching the Kafka jars with Maven took longer than {DOWNLOAD_TIMEOUT_S:.0f} s"
            ) from None
        if proc.returncode != 0 or not any((workdir / "libs").glob("*.jar")):
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            errors = [line for line in lines if "ERROR" in line] or lines
            detail = " | ".join(line.strip() for line in errors[-3:])
            raise BrokerError(
                f"Maven could not fetch the Kafka {self.kafka_version} jars "
                f"(exit {proc.returncode}): {detail or 'no output'}"
            )

    def _read_state(self) -> dict[str, Any] | None:
        try:
            raw = self.state_file.read_text()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(raw)
            int(state["pid"]), int(state["port"]), int(state["controller_port"])
            str(state["bootstrap"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable broker state file %s", self.state_file)
            self._remove_state()
            return None
        return dict(state)

    def _remove_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def _reuse(self, state: dict[str, Any], t0: float) -> BrokerInfo | None:
        """Return the running broker described by `state`, or None (and forget a stale one)."""
        pid = int(state["pid"])
        if not _process_alive(pid, state.get("create_time")):
            log.info("removing stale broker state (pid %d is not running)", pid)
            self._remove_state()
            return None
        bootstrap = str(state["bootstrap"])
        # Alive: it may still be starting (another process launched it) or be wedged.
        self._wait_ready(pid, bootstrap, t0, started_here=False)
        if int(state["port"]) != self.port:
            log.warning(
                "reusing the running broker on port %s, not the requested %d",
                state["port"],
                self.port,
            )
        return BrokerInfo(
            bootstrap=bootstrap,
            pid=pid,
            port=int(state["port"]),
            controller_port=int(state["controller_port"]),
            log_file=str(state.get("log_file", self.log_file)),
            data_dir=str(self.data_dir),
            reused=True,
            startup_s=time.monotonic() - t0,
        )

    def _check_ports_free(self) -> None:
        for name, port, env in (
            ("client", self.port, ENV_PORT),
            ("controller", self.controller_port, ENV_CONTROLLER_PORT),
        ):
            if not _port_in_use(self.host, port):
                continue
            owner = listener_pid(port)
            if owner is not None and self._is_our_broker(owner):
                # Our broker, but its state file was lost: it holds the data dir lock, so a
                # second one could not start anyway. Say how to get rid of it.
                raise BrokerError(
                    f"a broker for {self.data_dir} is already running as pid {owner} but has "
                    f"no state file; stop it with `kill {owner}` and start again"
                )
            who = f" by {_describe_pid(owner)}" if owner is not None else ""
            raise BrokerError(
                f"{name} port {self.host}:{port} is already in use{who}; free it or choose "
                f"another port with {env}"
            )

    def _is_our_broker(self, pid: int) -> bool:
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
        return MAIN_CLASS in cmdline and str(self.server_properties) in cmdline

    def _write_configs(self) -> None:
        for directory in (self.kafka_dir, self.log_dir, self.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(
            self.server_properties,
            _server_properties(
                port=self.port,
                controller_port=self.controller_port,
                log_dir=self.log_dir,
                host=self.host,
            ),
        )
        _write_atomic(self.log4j_config, _log4j2_properties(self.logs_dir))
        _write_atomic(self.kafka_dir / "log4j2-tools.properties", _tool_log4j2_properties())

    def _classpath(self) -> str:
        return str(self.libs_dir / "*")

    def _format_storage(self, java: str) -> None:
        if (self.log_dir / "meta.properties").exists():
            return  # formatted on an earlier start; formatting is once per log dir
        cmd = [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.kafka_dir / 'log4j2-tools.properties'}",
            "-cp",
            self._classpath(),
            STORAGE_TOOL_CLASS,
            "format",
            "--standalone",
            "--ignore-formatted",
            "--cluster-id",
            _kafka_cluster_id(),
            "--config",
            str(self.server_properties),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            raise BrokerError("formatting the Kafka storage took longer than 120 s") from None
        if proc.returncode != 0:
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            detail = " | ".join(line.strip() for line in lines[-5:])
            raise BrokerError(f"formatting the Kafka storage in {self.log_dir} failed: {detail}")

    def _java_command(self, java: str) -> list[str]:
        extra = os.environ.get(ENV_JAVA_OPTS, "").split()
        return [
            java,
            *HEAP_OPTS,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            *extra,  # last, so the user can override any of the above
            "-cp",
            self._classpath(),
            MAIN_CLASS,
            str(self.server_properties),
        ]

    def _launch(self, java: str, t0: float) -> BrokerInfo:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with self.jvm_output_file.open("ab") as out:
            out.write(f"\n==== starting broker at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            out.flush()
            # New session: the broker must outlive the CLI and not receive its Ctrl-C.
            proc = subprocess.Popen(
                self._java_command(java),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.kafka_dir,
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        try:
            create_time: float | None = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = None  # already gone; _wait_ready reports the death with the log
        state = {
            "pid": proc.pid,
            "create_time": create_time,
            "bootstrap": self.bootstrap,
            "host": self.host,
            "port": self.port,
            "controller_port": self.controller_port,
            "log_file": str(self.log_file),
            "jvm_output_file": str(self.jvm_output_file),
            "data_dir": str(self.data_dir),
            "log_dir": str(self.log_dir),
            "kafka_version": self.kafka_version,
            "started_at": time.time(),
        }
        # Written before readiness so a concurrent `ledger kafka stop` can find the process.
        _write_atomic(self.state_file, json.dumps(state, indent=2) + "\n")
        try:
            self._wait_ready(proc.pid, self.bootstrap, t0, started_here=True)
        except BaseException:
            self._terminate(proc.pid)
            self._remove_state()
            raise
        return BrokerInfo(
            bootstrap=self.bootstrap,
            pid=proc.pid,
            port=self.port,
            controller_port=self.controller_port,
            log_file=str(self.log_file),
            data_dir=str(self.data_dir),
            reused=False,
            startup_s=time.monotonic() - t0,
        )

    def _wait_ready(self, pid: int, bootstrap: str, t0: float, *, started_here: bool) -> None:
        deadline = t0 + self.start_timeout_s
        create_time = None
        with contextlib.suppress(psutil.Error):
            create_time = psutil.Process(pid).create_time()
        while True:
            child = _CHILDREN.get(pid)
            if child is not None:
                child.poll()  # reap, so a dead child is not a zombie that looks alive
            if not _process_alive(pid, create_time):
                raise BrokerError(self._death_message(pid))
            if _broker_answers(bootstrap, timeout_s=2.0):
                return
            if time.monotonic() >= deadline:
                what = "started" if started_here else "running"
                raise BrokerError(
                    f"the Kafka broker {what} as pid {pid} did not answer on {bootstrap} within "
                    f"{self.start_timeout_s:.0f} s; see {self.log_file}" + self._log_excerpt()
                )
            time.sleep(0.2)

    def _death_message(self, pid: int) -> str:
        child = _CHILDREN.get(pid)
        code = None
        if child is not None:
            # It may have died after the last poll(): reap it now for its exit code.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = child.wait(timeout=5)
        how = f" (exit code {code})" if code is not None else ""
        return (
            f"the Kafka broker (pid {pid}) died during start-up{how}; see {self.log_file}"
            + self._log_excerpt()
        )

    def _log_excerpt(self) -> str:
        parts = []
        server = _tail(self.log_file)
        if server:
            parts.append(f"last lines of {self.log_file}:\n" + "\n".join(server))
        jvm = [line for line in _tail(self.jvm_output_file) if not line.startswith("==== starting")]
        if jvm:
            parts.append(f"last lines of {self.jvm_output_file}:\n" + "\n".join(jvm))
        return ("\n" + "\n".join(parts)) if parts else ""

    def _terminate(self, pid: int) -> None:
        """SIGTERM (Kafka's controlled shutdown), then SIGKILL after stop_timeout_s."""
        child = _CHILDREN.pop(pid, None)
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
        if not self._wait_gone(proc, child, self.stop_timeout_s):
            log.warning(
                "broker pid %d ignored SIGTERM for %.0f s; killing it", pid, self.stop_timeout_s
            )
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
            self._wait_gone(proc, child, 10.0)

    @staticmethod
    def _wait_gone(
        proc: psutil.Process, child: subprocess.Popen[bytes] | None, timeout_s: float
    ) -> bool:
        if child is not None:  # our own child: wait() also reaps it
            try:
                child.wait(timeout=timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        try:
            proc.wait(timeout=timeout_s)  # works for non-children too (polls)
            return True
        except psutil.TimeoutExpired:
            return False
        except psutil.NoSuchProcess:
            return True
