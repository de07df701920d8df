"""Starts `oxbow dev` (three nodes in one process) on free ports for each test module
(`cluster`), or three `oxbow node` processes that a test can SIGKILL and start again one by one
(`nodes`)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

def _free_base_port():
    # Kafka ports base..base+2 and peer ports 10,000 higher must all be free; stay below the
    # ephemeral range so no outgoing connection takes them meanwhile.
    for base in range(21000 + (os.getpid() % 50) * 20, 31000, 3):
        ports = [base + i for i in range(3)] + [base + 10000 + i for i in range(3)]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


@pytest.fixture(scope="module")
def cluster():
    binary = os.environ.get("OXBOW_BIN", "target/debug/oxbow")
    data = tempfile.mkdtemp(prefix="oxbow-pytest-")
    base = _free_base_port()
    log = open(os.path.join(data, "dev.log"), "w")
    process = subprocess.Popen(
        [binary, "dev", "--data-dir", os.path.join(data, "d"), "--port", str(base), "--topic", "events:3",
         "--auto-create-topics"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    bootstrap = f"127.0.0.1:{base}"
    _wait_for_leaders(bootstrap, "events", 3, process, data)
    yield bootstrap
    process.terminate()
    process.wait(timeout=30)
    log.close()
    if os.environ.get("OXBOW_KEEP_DATA"):
        print(f"oxbow dev data and log kept in {data}")
    else:
        shutil.rmtree(data, ignore_errors=True)


class Nodes:
    """Three `oxbow node` processes (node ids 1-3), each with its own configuration file, data
    directory and log (`node-N.log` in the data directory)."""

    def __init__(self, binary, data, base, log_config=""):
        self.binary = binary
        self.data = data
        self.kafka = [base + i for i in range(3)]
        self.peer = [base + 10000 + i for i in range(3)]
        self.processes = [None, None, None]
        self.logs = []
        secret = os.urandom(16).hex()
        for i in range(3):
            text = (
                f"node_id = {i + 1}\n"
                f'data_dir = "{os.path.join(data, f"node-{i + 1}")}"\n'
                f'kafka_listen = "127.0.0.1:{self.kafka[i]}"\n'
                f'peer_listen = "127.0.0.1:{self.peer[i]}"\n'
                f'peer_secret = "{secret}"\n'
                "tick_ms = 50\n"
            )
            if log_config:
                text += "[log]\n" + log_config
            for j in range(3):
                if j != i:
                    text += (
                        "[[peers]]\n"
                        f"id = {j + 1}\n"
                        f'peer_address = "127.0.0.1:{self.peer[j]}"\n'
                        f'kafka_address = "127.0.0.1:{self.kafka[j]}"\n'
                    )
            text += '[[topics]]\nname = "events"\npartitions = 3\nreplication_factor = 3\n'
            with open(self.config(i), "w") as f:
                f.write(text)

    def config(self, i):
        return os.path.join(self.data, f"node-{i + 1}.toml")

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{port}" for port in self.kafka)

    def index_of_port(self, port):
        """The index (0-2) of the node serving Kafka on `port`."""
        return self.kafka.index(port)

    def running(self, i):
        return self.processes[i] is not None and self.processes[i].poll() is None

    def start(self, i):
        assert self.processes[i] is None, f"node {i + 1} is running"
        log = open(os.path.join(self.data, f"node-{i + 1}.log"), "a")
        self.logs.append(log)
        self.processes[i] = subprocess.Popen(
            [self.binary, "--log-level", "info", "node", "--config", self.config(i)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def kill9(self, i):
        process = self.processes[i]
        self.processes[i] = None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self):
        for i, process in enumerate(self.processes):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
                self.processes[i] = None
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def nodes():
    yield from start_nodes()


def start_nodes(log_config=""):
    """Three `oxbow node` processes, their configurations' `[log]` table holding `log_config`
    (lines of TOML), until the generator is closed."""
    binary = os.environ.get("OXBOW_BIN", "target/debug/oxbow")
    data = tempfile.mkdtemp(prefix="oxbow-pytest-nodes-")
    nodes = Nodes(binary, data, _free_base_port(), log_config)
    for i in range(3):
        nodes.start(i)
    try:
        _wait_for_leaders(nodes.bootstrap, "events", 3, nodes.processes[0], data)
        yield nodes
    finally:
        nodes.stop_all()
        if os.environ.get("OXBOW_KEEP_DATA"):
            print(f"oxbow node data and logs kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)


def _wait_for_leaders(bootstrap, topic, partitions, process, data):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"oxbow exited; logs in {data}")
        try:
            metadata = admin.list_topics(topic, timeout=2)
            found = metadata.topics.get(topic)
            if found and found.error is None and len(found.partitions) == partitions and all(
                p.leader > 0 for p in found.partitions.values()
            ):
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no leaders for {topic}; logs in {data}")
