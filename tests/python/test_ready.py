"""`oxbow dev` says "ready" only when it can serve: an admin request sent that moment succeeds
at once (confluent-kafka's CreateTopics used to wait its full 30 s right after start)."""

import os
import shutil
import subprocess
import tempfile
import time

from conftest import _free_base_port


def test_create_topics_the_moment_oxbow_dev_says_ready():
    from confluent_kafka.admin import AdminClient, NewTopic

    binary = os.environ.get("OXBOW_BIN", "target/debug/oxbow")
    data = tempfile.mkdtemp(prefix="oxbow-pytest-ready-")
    base = _free_base_port()
    process = subprocess.Popen(
        [binary, "--log-level", "warning", "dev", "--data-dir", os.path.join(data, "d"), "--port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.time() + 60
        for line in process.stdout:
            if line.startswith("ready: "):
                break
            assert time.time() < deadline, "oxbow dev never said ready"
        else:
            raise AssertionError("oxbow dev exited before it was ready")
        started = time.time()
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{base}"})
        futures = admin.create_topics([NewTopic("at-ready", num_partitions=3, replication_factor=3)])
        futures["at-ready"].result(timeout=30)
        took = time.time() - started
        print(f"CreateTopics right after ready took {took * 1000:.0f} ms")
        assert took < 2.0, f"CreateTopics took {took:.2f} s after ready"
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
