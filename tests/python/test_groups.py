"""Consumer groups with confluent-kafka (librdkafka) and kafka-python: three members share six
partitions, one is killed mid-run and a fourth joins later. Every record is consumed, the
assignment rebalances after each change, and the group's committed offsets never go back."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

MEMBER = os.path.join(os.path.dirname(__file__), "group_member.py")
PARTITIONS = 6
PER_PHASE = 300


class Member:
    """A group member in its own process (group_member.py), so it can be killed."""

    def __init__(self, client, bootstrap, topic, group, log_dir):
        self.log = open(os.path.join(log_dir, f"member-{id(self)}.log"), "w")
        self.process = subprocess.Popen(
            [sys.executable, MEMBER, client, bootstrap, topic, group],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.lock = threading.Lock()
        self.records = []
        self.assignment = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            event = json.loads(line)
            with self.lock:
                if "assignment" in event:
                    self.assignment = event["assignment"]
                else:
                    self.records.append(event["record"])

    def current(self):
        with self.lock:
            return list(self.assignment)

    def consumed(self):
        with self.lock:
            return list(self.records)

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.log.close()


class CommitWatch:
    """Reads the group's committed offsets twice a second and remembers any that went back."""

    def __init__(self, bootstrap, topic, group):
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self.partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.last = {}
        self.backwards = []
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while self.running:
            try:
                committed = self.consumer.committed(self.partitions, timeout=5)
            except Exception:
                committed = []
            for tp in committed:
                if tp.offset < 0:
                    continue
                before = self.last.get(tp.partition, -1)
                if tp.offset < before:
                    self.backwards.append((tp.partition, before, tp.offset))
                self.last[tp.partition] = max(before, tp.offset)
            time.sleep(0.5)

    def total(self):
        return sum(self.last.values())

    def stop(self):
        self.running = False
        self.thread.join(timeout=10)
        self.consumer.close()


def wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting until {what}")


def produce(bootstrap, topic, start, count):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(start, start + count):
        producer.produce(topic, value=str(i).encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0, "every record acknowledged"


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_group_shares_partitions_rebalances_and_commits(cluster, client, tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group = f"groups-{client}", f"group-{client}"
    admin = AdminClient({"bootstrap.servers": cluster})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)])[
        topic
    ].result(timeout=30)
    wait_until(
        lambda: all(
            p.leader > 0
            for p in admin.list_topics(topic, timeout=5).topics[topic].partitions.values()
        ),
        30,
        "the topic has leaders",
    )

    members = [Member(client, cluster, topic, group, tmp_path) for _ in range(3)]
    watch = CommitWatch(cluster, topic, group)

    def live(ms):
        return [m for m in ms if m.process.poll() is None]

    def covered(ms):
        assigned = [p for m in ms for p in m.current()]
        return sorted(assigned) == list(range(PARTITIONS)) and all(m.current() for m in ms)

    def everything_consumed(upto):
        seen = {int(v) for m in members for v in m.consumed()}
        return seen >= set(range(upto))

    try:
        wait_until(lambda: covered(members), 60, "three members share the six partitions")
        produce(cluster, topic, 0, PER_PHASE)
        wait_until(lambda: everything_consumed(PER_PHASE), 60, "phase one is consumed")

        # A member dies without leaving: its session expires and the others take over.
        members[0].kill()
        produce(cluster, topic, PER_PHASE, PER_PHASE)
        wait_until(lambda: covered(live(members)), 60, "two members share the partitions")
        wait_until(lambda: everything_consumed(2 * PER_PHASE), 60, "phase two is consumed")

        # A new member joins and gets a share.
        members.append(Member(client, cluster, topic, group, tmp_path))
        wait_until(
            lambda: covered(live(members)) and members[-1].current(),
            60,
            "the new member gets partitions",
        )
        produce(cluster, topic, 2 * PER_PHASE, PER_PHASE)
        wait_until(lambda: everything_consumed(3 * PER_PHASE), 60, "phase three is consumed")
        wait_until(
            lambda: watch.total() == 3 * PER_PHASE, 30, "every record's offset is committed"
        )
    finally:
        for m in members:
            m.stop()
        watch.stop()
    assert watch.backwards == [], f"committed offsets went back: {watch.backwards}"
