"""processors.kafka_broker without a real broker: config, state, downloads, error messages.

A fake `java` (a shell script) stands in for the JVM, so these run anywhere, fast.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from processors import cli
from processors.kafka_broker import (
    KAFKA_VERSION,
    BrokerError,
    LocalBroker,
    _kafka_cluster_id,
    _server_properties,
    default_data_dir,
    default_home,
)

FAKE_JAVA_VERSION_17 = "echo 'openjdk version \"17.0.9\" 2023-10-17' >&2; exit 0"


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def fake_java(bin_dir: Path, *, version_cmd: str = FAKE_JAVA_VERSION_17, run_cmd: str) -> Path:
    """A `java` that answers -version, succeeds as StorageTool, and runs `run_cmd` as broker."""
    return write_script(
        bin_dir / "java",
        f"""case "$*" in
  *" -version"*|-version) {version_cmd};;
  *StorageTool*) exit 0;;
esac
{run_cmd}""",
    )


def fake_jar_cache(home: Path) -> None:
    """A complete-looking jar cache, so no Maven is needed."""
    libs = home / f"kafka-{KAFKA_VERSION}" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13.jar").write_bytes(b"")
    (home / f"kafka-{KAFKA_VERSION}" / "COMPLETE").write_text(
        f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}\n"
    )


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No real java/mvn/JAVA_HOME/ledger env; PATH is only tmp_path/bin (plus `sh` tools)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in (
        "JAVA_HOME",
        "LEDGER_HOME",
        "LEDGER_DATA_DIR",
        "LEDGER_KAFKA_PORT",
        "LEDGER_KAFKA_CONTROLLER_PORT",
        "LEDGER_KAFKA_BOOTSTRAP",
        "LEDGER_KAFKA_JAVA_OPTS",
    ):
        monkeypatch.delenv(name, raising=False)
    # The fake scripts need a few tools, but the system dirs also hold the real java and mvn
    # (Debian: /usr/bin/java): expose just those tools through symlinks in our private bin dir.
    for tool in ("sh", "sleep", "mkdir"):
        found = shutil.which(tool)
        if found is not None:
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    yield bin_dir


def make_broker(
    tmp_path: Path,
    free_port: Callable[[], int],
    *,
    start_timeout_s: float = 30.0,
    stop_timeout_s: float = 10.0,
) -> LocalBroker:
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    return LocalBroker(
        home=tmp_path / "home",
        data_dir=tmp_path / "data",
        port=port,
        controller_port=controller_port,
        start_timeout_s=start_timeout_s,
        stop_timeout_s=stop_timeout_s,
    )


# ---- locations and config ------------------------------------------------------------------


def test_default_dirs_follow_ledger_env_then_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LEDGER_HOME", raising=False)
    monkeypatch.delenv("LEDGER_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert default_home() == tmp_path / "cache" / "ledger"
    assert default_data_dir() == tmp_path / "share" / "ledger"

    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "d"))
    assert default_home() == tmp_path / "h"
    assert default_data_dir() == tmp_path / "d"


def test_ports_come_from_env_and_bad_values_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_KAFKA_PORT", "39092")
    monkeypatch.setenv("LEDGER_KAFKA_CONTROLLER_PORT", "39093")
    broker = LocalBroker()
    assert (broker.port, broker.controller_port, broker.bootstrap) == (
        39092,
        39093,
        "127.0.0.1:39092",
    )
    monkeypatch.setenv("LEDGER_KAFKA_PORT", "kafka")
    with pytest.raises(BrokerError, match="LEDGER_KAFKA_PORT='kafka' is not a port number"):
        LocalBroker()
    with pytest.raises(BrokerError, match="both 5000"):
        LocalBroker(port=5000, controller_port=5000)


def parse_properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = parse_properties(
        _server_properties(port=19092, controller_port=19093, log_dir=tmp_path / "data")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert int(props["offsets.topic.num.partitions"]) <= 8
    assert int(props["transaction.state.log.num.partitions"]) <= 8
    # Below the 512 MiB heap, with room to spare.
    assert int(props["log.cleaner.dedupe.buffer.size"]) <= 64 * 1024 * 1024
    # The processor fences instead of aborting (tests/pipeline/test_recovery.py): no per-write
    # check of each transaction with the coordinator.
    assert props["transaction.partition.verification.enable"] == "false"


def test_configs_are_written_under_the_data_dir(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    broker = make_broker(tmp_path, free_port)
    broker._write_configs()
    props = parse_properties(broker.server_properties.read_text())
    data = (tmp_path / "data").resolve()
    assert Path(props["log.dirs"]).resolve().is_relative_to(data)
    assert broker.log_file.resolve().is_relative_to(data)
    assert props["listeners"].startswith(f"PLAINTEXT://127.0.0.1:{broker.port},")
    assert f"{broker.logs_dir}/server.log" in broker.log4j_config.read_text()


# ---- state file ------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def write_state(broker: LocalBroker, pid: int) -> None:
    broker.kafka_dir.mkdir(parents=True, exist_ok=True)
    broker.state_file.write_text(
        json.dumps(
            {
                "pid": pid,
                "create_time": None,
                "bootstrap": broker.bootstrap,
                "port": broker.port,
                "controller_port": broker.controller_port,
                "log_file": str(broker.log_file),
                "kafka_version": KAFKA_VERSION,
                "started_at": 0.0,
            }
        )
    )


def test_status_without_state_is_not_running(tmp_path: Path, free_port: Callable[[], int]) -> None:
    status = make_broker(tmp_path, free_port).status()
    assert not status.has_state and not status.running and status.pid is None


def test_stale_state_is_reported_and_cleared_by_stop(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    broker = make_broker(tmp_path, free_port)
    write_state(broker, dead_pid())

    status = broker.status()
    assert status.has_state and not status.pid_alive and not status.running

    assert broker.stop() is False  # nothing was running...
    assert not broker.state_file.exists()  # ...but the stale state is gone


def test_pid_reused_by_another_process_is_not_taken_for_the_broker(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    broker = make_broker(tmp_path, free_port)
    write_state(broker, psutil.Process().pid)  # alive, but not the process that was recorded
    state = json.loads(broker.state_file.read_text())
    state["create_time"] = psutil.Process().create_time() - 1000
    broker.state_file.write_text(json.dumps(state))

    assert not broker.status().pid_alive
    assert broker.stop() is False  # and it must certainly not signal us


def test_corrupt_state_file_is_ignored(tmp_path: Path, free_port: Callable[[], int]) -> None:
    broker = make_broker(tmp_path, free_port)
    broker.kafka_dir.mkdir(parents=True)
    broker.state_file.write_text("{not json")
    assert not broker.status().has_state
    assert not broker.state_file.exists()


def test_start_replaces_stale_state(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    fake_java(isolated_env, run_cmd="echo 'boom-marker'; exit 3")
    fake_jar_cache(tmp_path / "home")
    broker = make_broker(tmp_path, free_port)
    write_state(broker, dead_pid())
    with pytest.raises(BrokerError, match="died during start-up"):
        broker.start()  # got past the stale state to an actual launch
    assert not broker.state_file.exists()


# ---- errors ------------------------------------------------------------------------------------


def test_missing_java_is_a_clear_error(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    with pytest.raises(BrokerError, match=r"Java 17\+ is required .* no `java` was found"):
        make_broker(tmp_path, free_port).start()


def test_old_java_is_a_clear_error(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    fake_java(
        isolated_env,
        version_cmd="echo 'java version \"1.8.0_392\"' >&2; exit 0",
        run_cmd="exit 1",
    )
    with pytest.raises(BrokerError, match="is Java 8"):
        make_broker(tmp_path, free_port).start()


def test_missing_maven_is_a_clear_error(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    fake_java(isolated_env, run_cmd="exit 1")
    broker = make_broker(tmp_path, free_port)
    with pytest.raises(BrokerError, match=r"Maven \(`mvn`\) is required"):
        broker.start()
    assert not broker.jar_dir.exists()


def test_taken_port_is_a_clear_error(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    fake_java(isolated_env, run_cmd="exit 1")
    fake_jar_cache(tmp_path / "home")
    broker = make_broker(tmp_path, free_port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", broker.port))
        squatter.listen()
        with pytest.raises(BrokerError) as raised:
            broker.start()
    message = str(raised.value)
    assert f"client port 127.0.0.1:{broker.port} is already in use" in message
    assert "LEDGER_KAFKA_PORT" in message
    assert not broker.state_file.exists()


def test_broker_dying_at_start_up_reports_its_log(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    fake_java(
        isolated_env,
        run_cmd='i=1; while [ $i -le 40 ]; do echo "line $i"; i=$((i+1)); done; '
        "echo 'ERROR Exiting Kafka: boom-marker'; exit 1",
    )
    fake_jar_cache(tmp_path / "home")
    broker = make_broker(tmp_path, free_port)
    with pytest.raises(BrokerError) as raised:
        broker.start()
    message = str(raised.value)
    first_line = message.splitlines()[0]
    assert "died during start-up (exit code 1)" in first_line
    assert "boom-marker" in message
    assert "line 40" in message and "line 10\n" not in message  # only the tail
    assert not broker.state_file.exists()


def test_broker_not_answering_in_time_is_stopped(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    pid_file = tmp_path / "fake.pid"
    fake_java(isolated_env, run_cmd=f"echo $$ > {pid_file}; exec sleep 60")
    fake_jar_cache(tmp_path / "home")
    broker = make_broker(tmp_path, free_port, start_timeout_s=1.5, stop_timeout_s=5.0)
    with pytest.raises(BrokerError, match="did not answer"):
        broker.start()
    assert not psutil.pid_exists(int(pid_file.read_text()))  # terminated and reaped
    assert not broker.state_file.exists()


# ---- jar download ----------------------------------------------------------------------------


def fake_mvn(bin_dir: Path, body: str) -> None:
    # Finds -DoutputDirectory=... among the arguments, like the real copy-dependencies goal.
    write_script(
        bin_dir / "mvn",
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; '
        "esac; done\n" + body,
    )


def test_download_is_atomic_and_marked(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    fake_mvn(isolated_env, 'mkdir -p "$out"; echo jar > "$out/kafka_2.13-4.1.1.jar"')
    broker = make_broker(tmp_path, free_port)
    libs = broker.ensure_jars()
    assert (libs / "kafka_2.13-4.1.1.jar").exists()
    assert broker.marker_file.read_text().strip().endswith(f":{KAFKA_VERSION}")
    assert "kafka_2.13" in (broker.jar_dir / "pom.xml").read_text()
    assert [p.name for p in broker.home.iterdir() if "download" in p.name] == []


def test_failed_download_leaves_no_cache(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    fake_mvn(
        isolated_env,
        'mkdir -p "$out"; echo half > "$out/half.jar"; '
        "echo '[ERROR] Could not resolve dependencies: network unreachable'; exit 1",
    )
    broker = make_broker(tmp_path, free_port)
    with pytest.raises(BrokerError, match="Could not resolve dependencies"):
        broker.ensure_jars()
    assert not broker.jar_dir.exists()
    assert [p.name for p in broker.home.iterdir() if "download" in p.name] == []


def test_interrupted_download_is_not_taken_as_complete(
    isolated_env: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    broker = make_broker(tmp_path, free_port)
    # What a crash would leave: a temp dir with some jars, and an unmarked final dir.
    leftover = broker.home / f".kafka-{KAFKA_VERSION}-download-crashed" / "libs"
    leftover.mkdir(parents=True)
    (leftover / "half.jar").write_bytes(b"")
    (broker.libs_dir).mkdir(parents=True)
    (broker.libs_dir / "half.jar").write_bytes(b"")

    fake_mvn(isolated_env, 'mkdir -p "$out"; echo jar > "$out/full.jar"')
    libs = broker.ensure_jars()
    assert sorted(p.name for p in libs.iterdir()) == ["full.jar"]
    assert not leftover.parent.exists()


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_status_exits_non_zero_when_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "kafka",
            "status",
            "--data-dir",
            str(tmp_path),
            "--port",
            "29990",
            "--controller-port",
            "29991",
        ]
    )
    assert code != 0
    assert "not running" in capsys.readouterr().out


def test_cli_errors_are_one_line_without_traceback(
    isolated_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["kafka", "start", "--data-dir", str(tmp_path / "data")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ledger: error: Java 17+ is required")
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_cli_up_with_an_unreachable_configured_broker_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `ledger up` uses LEDGER_KAFKA_BOOTSTRAP instead of starting a broker; one that does not
    # answer is a one-line error, not a traceback.
    monkeypatch.setenv("LEDGER_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert cli.main(["up"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("ledger: error: ") and "127.0.0.1:1" in error
    assert len(error.strip().splitlines()) == 1


def test_cluster_ids_are_kafka_uuids_that_never_look_like_options() -> None:
    ids = {_kafka_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(len(i) == 22 and re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)
    assert not any(i.startswith("-") for i in ids)  # StorageTool would parse it as an option
