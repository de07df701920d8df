"""Starts `oxbow dev` (three nodes in one process) on free ports for each test module."""

import os
import shutil
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


def _wait_for_leaders(bootstrap, topic, partitions, process, data):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"oxbow dev exited; log in {data}/dev.log")
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
    raise RuntimeError(f"no leaders for {topic}; log in {data}/dev.log")
