"""What the transaction tests share: topics, the node that coordinates a transactional id
(a raw FindCoordinator request, so no client's private API is needed), and everything a
consumer of each isolation level reads from a topic."""

import socket
import struct
import time


def wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")


def create_topic(bootstrap, topic, partitions):
    """Creates `topic` (3 replicas) and waits until each partition has a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=3)])[topic].result(
        timeout=30
    )

    def has_leaders():
        found = admin.list_topics(topic, timeout=5).topics.get(topic)
        return (
            found is not None
            and found.error is None
            and len(found.partitions) == partitions
            and all(p.leader > 0 for p in found.partitions.values())
        )

    wait_until(has_leaders, 30, f"{topic} has leaders")


def _string(value):
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def find_coordinator(port, key, key_type=1, timeout=5):
    """FindCoordinator v1 to the node on `port`: (error code, the coordinator's port)."""
    body = struct.pack(">hhi", 10, 1, 1) + _string("txn-test") + _string(key) + struct.pack(">b", key_type)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
    at = 4 + 4 + 4  # size, correlation id, throttle time
    (error,) = struct.unpack_from(">h", data, at)
    at += 2
    (length,) = struct.unpack_from(">h", data, at)
    at += 2 + max(length, 0)  # error message (nullable)
    at += 4  # node id
    (length,) = struct.unpack_from(">h", data, at)
    at += 2 + length  # host
    (coordinator_port,) = struct.unpack_from(">i", data, at)
    return error, coordinator_port


def coordinator_node(nodes, transactional_id, timeout=30):
    """The index of the running node that coordinates `transactional_id`, asking each running
    node until one names a running node."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for i, port in enumerate(nodes.kafka):
            if not nodes.running(i):
                continue
            try:
                error, coordinator = find_coordinator(port, transactional_id)
            except OSError:
                continue
            if error == 0 and coordinator in nodes.kafka and nodes.running(nodes.index_of_port(coordinator)):
                return nodes.index_of_port(coordinator)
        time.sleep(0.2)
    raise AssertionError(f"no coordinator for {transactional_id} in {timeout} s")


def read_confluent(bootstrap, topic, isolation, timeout=30):
    """Every value a confluent-kafka consumer with `isolation.level` reads from `topic`, from
    the beginning until its position reaches each partition's high watermark (so, with
    read_committed, until every transaction there has its marker)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    config = {
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{isolation}-{time.time()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    ends_reader = Consumer({**config, "isolation.level": "read_uncommitted"})
    partitions = sorted(ends_reader.list_topics(topic, timeout=10).topics[topic].partitions)
    marks = {p: ends_reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in partitions}
    # An empty partition is read already (the consumer has no position in it).
    ends = {p: high for p, (low, high) in marks.items() if high > low}
    ends_reader.close()

    consumer = Consumer({**config, "isolation.level": isolation})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    values = []
    deadline = time.time() + timeout
    try:
        while True:
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                if m.error() is None:
                    values.append(m.value().decode())
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] for tp in positions):
                return values
            assert time.time() < deadline, f"{isolation} read of {topic}: at {positions}, the ends are {ends}"
    finally:
        consumer.close()


def read_kafka_python(bootstrap, topic, isolation, timeout=30):
    """The same as `read_confluent` with kafka-python."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, isolation_level=isolation
    )
    ends_reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, isolation_level="read_uncommitted")
    partitions = [TopicPartition(topic, p) for p in sorted(ends_reader.partitions_for_topic(topic))]
    starts = ends_reader.beginning_offsets(partitions)
    ends = {tp: end for tp, end in ends_reader.end_offsets(partitions).items() if end > starts[tp]}
    ends_reader.close()
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values = []
    deadline = time.time() + timeout
    try:
        while True:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value.decode() for r in records)
            positions = {tp: consumer.position(tp) for tp in ends}
            if all(positions[tp] >= ends[tp] for tp in ends):
                return values
            assert time.time() < deadline, f"{isolation} read of {topic}: at {positions}, the ends are {ends}"
    finally:
        consumer.close()
