"""Compacted topics end to end with kafka-python and confluent-kafka (librdkafka), unchanged:
100,000 updates over 1,000 keys and tombstones for 100 of them shrink on disk once the log
cleaner has run, and a fresh consumer from the start then reads exactly the latest value of
each live key, and nothing of the deleted ones once `delete.retention.ms` has passed; a topic
switched from `delete` to `compact` at run time compacts too."""

import multiprocessing
import os
import time

import pytest

from conftest import _wait_for_leaders, start_nodes

KEYS = 1_000
UPDATES = 100_000
DELETED = 100
PARTITIONS = 3
DELETE_RETENTION_MS = 3_000
# Small segments and a quick roll, so that most of the log is in closed segments, which the
# cleaner may rewrite; no compaction lag and any dirty share, so it starts at once.
COMPACT = {
    "cleanup.policy": "compact",
    "segment.bytes": str(1 << 20),
    "segment.ms": "2000",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": str(DELETE_RETENTION_MS),
}


@pytest.fixture(scope="module")
def nodes():
    # The cleaner looks for work every 200 ms, and segments roll by segment.ms at the next
    # check, every 500 ms, rather than Kafka's 15 s and 5 minutes.
    yield from start_nodes("cleaner_backoff_ms = 200\nretention_check_interval_ms = 500\n")


def _group_bytes(nodes):
    """Bytes on disk of each Raft group's files (`g<group>-<segment>.seg` and the like), over
    the three nodes (`nodes`, or their data directory)."""
    data = nodes if isinstance(nodes, str) else nodes.data
    groups = {}
    for i in range(3):
        for root, _, files in os.walk(os.path.join(data, f"node-{i + 1}")):
            for f in files:
                if f.startswith("g") and len(f) > 21 and f[1:21].isdigit():
                    groups[f[1:21]] = groups.get(f[1:21], 0) + os.stat(os.path.join(root, f)).st_blocks * 512
    return groups


def _disk_bytes(nodes, groups):
    """Bytes on disk of the files of `groups`."""
    return sum(n for g, n in _group_bytes(nodes).items() if g in groups)


class _Peak:
    """The most bytes `groups` held on disk, sampled every 50 ms by another process until
    `stop` (the cleaner may keep up with the producer, and a pure-Python producer such as
    kafka-python would starve a sampling thread of the GIL)."""

    def __init__(self, nodes, groups):
        self._nodes, self._groups = nodes, groups
        # Spawned, not forked: a fork of a process running librdkafka's threads can hang.
        context = multiprocessing.get_context("spawn")
        self._peak = context.Value("q", 0)
        self._stop = context.Event()
        self._process = context.Process(target=_sample, args=(nodes.data, groups, self._peak, self._stop), daemon=True)
        self._process.start()

    def stop(self):
        self._stop.set()
        self._process.join(timeout=30)
        return max(self._peak.value, _disk_bytes(self._nodes, self._groups))


def _sample(data, groups, peak, stop):
    while not stop.is_set():
        peak.value = max(peak.value, _disk_bytes(data, groups))
        stop.wait(0.05)


def _key(i):
    return f"k{i % KEYS:04d}"


def _value(i):
    # About 100 bytes, so the log holds about 12 MB a replica before cleaning.
    return f"v{i:06d}-".ljust(100, "x")


def _expected(updates):
    latest = {}
    for i in range(updates):
        latest[_key(i)] = _value(i)
    return latest


def _create(client, nodes, topic, configs):
    bootstrap = nodes.bootstrap
    if client == "confluent":
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})
        new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3, config=configs)
        admin.create_topics([new])[topic].result(timeout=30)
    else:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, PARTITIONS, 3, topic_configs=configs)])
        admin.close()
    _wait_for_leaders(bootstrap, topic, PARTITIONS, nodes.processes[0], nodes.data)


def _create_and_find(client, nodes, topic, configs):
    """Creates `topic` and returns its partitions' Raft groups: those whose files appear."""
    before = set(_group_bytes(nodes))
    _create(client, nodes, topic, configs)
    deadline = time.time() + 10
    while len(set(_group_bytes(nodes)) - before) < PARTITIONS:
        assert time.time() < deadline, f"no files for {topic}'s partitions"
        time.sleep(0.1)
    return set(_group_bytes(nodes)) - before


def _alter_to_compact(client, bootstrap, topic):
    if client == "confluent":
        from confluent_kafka.admin import (
            AdminClient,
            AlterConfigOpType,
            ConfigEntry,
            ConfigResource,
            ResourceType,
        )

        admin = AdminClient({"bootstrap.servers": bootstrap})
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in COMPACT.items()]
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(timeout=30)
    else:
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=COMPACT)])
        admin.close()


def _produce(client, bootstrap, topic, updates, deleted):
    """Writes `updates` keyed updates, then a tombstone (null value) for each of the first
    `deleted` keys, idempotently with acks=all."""
    keys = [(_key(i), _value(i)) for i in range(updates)] + [(_key(i), None) for i in range(deleted)]
    if client == "confluent":
        from confluent_kafka import Producer

        producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
        )
        failed = []

        def report(err, _msg):
            if err is not None:
                failed.append(err)

        for key, value in keys:
            while True:
                try:
                    producer.produce(
                        topic, key=key.encode(), value=None if value is None else value.encode(), on_delivery=report
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(60) == 0
        assert failed == []
    else:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
        futures = [
            producer.send(topic, key=key.encode(), value=None if value is None else value.encode())
            for key, value in keys
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=60)
        producer.close()


def _read_from_start(client, bootstrap, topic):
    """Every (key, value) a fresh consumer reads from the start of each partition up to its
    high watermark, in order per partition (a tombstone's value is None)."""
    if client == "confluent":
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        # The end of a partition is told by its EOF event: librdkafka's position() is the offset
        # after the last record consumed, which stays below the high watermark when the log
        # ends with a batch the cleaner emptied (as after tombstones past delete.retention.ms).
        from confluent_kafka import KafkaError

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"compaction-reader-{time.time()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        ends = {}
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        read = []
        at_end = set()
        deadline = time.time() + 60
        try:
            while not set(ends) <= at_end:
                for m in consumer.consume(num_messages=1000, timeout=0.2):
                    if m.error() is not None:
                        assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                        if m.offset() >= ends[m.partition()]:
                            at_end.add(m.partition())
                        continue
                    read.append((m.key().decode(), None if m.value() is None else m.value().decode()))
                assert time.time() < deadline, f"read of {topic}: at the end of {at_end}, the ends are {ends}"
        finally:
            consumer.close()
        return read
    else:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        read = []
        deadline = time.time() + 60
        try:
            while any(consumer.position(tp) < ends[tp] for tp in partitions):
                for records in consumer.poll(timeout_ms=200).values():
                    read.extend((r.key.decode(), None if r.value is None else r.value.decode()) for r in records)
                assert time.time() < deadline, f"read of {topic} not at the ends {ends}"
        finally:
            consumer.close()
        return read


def _wait_compacted(client, nodes, topic, groups, expected, peak_bytes, deleted_at=None):
    """Waits until a fresh read from the start is exactly `expected` (one record per live key,
    its latest value; nothing of a deleted key), and the topic's bytes on disk have fallen.
    Returns (the read's record count, the topic's bytes on disk)."""
    deadline = time.time() + 180
    while True:
        topic_bytes = _disk_bytes(nodes, groups)
        read = _read_from_start(client, nodes.bootstrap, topic)
        latest = dict(read)
        if len(read) == len(expected) and latest == expected and topic_bytes < peak_bytes // 4:
            if deleted_at is not None:
                assert time.time() - deleted_at >= DELETE_RETENTION_MS / 1000, "a tombstone went before delete.retention.ms"
            return len(read), topic_bytes
        assert time.time() < deadline, (
            f"{topic} not compacted in 180 s: read {len(read)} records for {len(expected)} live keys"
            f" ({sum(1 for k, v in latest.items() if expected.get(k) != v)} keys not at their latest value),"
            f" {topic_bytes} bytes on disk of {peak_bytes}"
        )
        time.sleep(1)


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_compacted_topic_keeps_the_latest_value_per_key(nodes, client):
    topic = f"compacted-{client}"
    groups = _create_and_find(client, nodes, topic, COMPACT)
    started = time.time()
    sampler = _Peak(nodes, groups)
    _produce(client, nodes.bootstrap, topic, UPDATES, DELETED)
    deleted_at = time.time()
    peak = sampler.stop()
    # At least two closed 1 MiB segments on each of the three replicas: the cleaner keeps up
    # with a slow producer (kafka-python), so the log never holds all 100,000 updates at once.
    assert peak > (3 * 2) << 20, f"the log is on disk ({peak} bytes)"

    expected = {k: v for k, v in _expected(UPDATES).items() if int(k[1:]) >= DELETED}
    count, compacted = _wait_compacted(client, nodes, topic, groups, expected, peak, deleted_at)
    print(
        f"{client}: {UPDATES} updates over {KEYS} keys, {DELETED} deleted: {peak} bytes on disk (3 replicas)"
        f" fell to {compacted} ({compacted / peak:.1%}); a fresh read from the start has {count} records, the"
        f" latest of each live key, {time.time() - started:.1f} s after the first write"
    )


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_topic_switched_from_delete_to_compact_at_run_time_compacts(nodes, client):
    topic = f"switched-{client}"
    updates = UPDATES // 2
    groups = _create_and_find(client, nodes, topic, {"cleanup.policy": "delete", "segment.bytes": str(1 << 20)})
    sampler = _Peak(nodes, groups)
    _produce(client, nodes.bootstrap, topic, updates, 0)
    peak = sampler.stop()
    time.sleep(2)
    assert _disk_bytes(nodes, groups) >= peak * 9 // 10, "a delete-policy topic is not cleaned"

    _alter_to_compact(client, nodes.bootstrap, topic)
    count, compacted = _wait_compacted(client, nodes, topic, groups, _expected(updates), peak)
    print(
        f"{client}: switched to compact after {updates} updates over {KEYS} keys: {peak} bytes on disk fell to"
        f" {compacted} ({compacted / peak:.1%}), {count} records read from the start"
    )
