"""What the transaction tests share: topics, the node that coordinates a transactional id
(a raw FindCoordinator request, so no client's private API is needed), everything a consumer
of each isolation level reads from a topic, and kafka-python's transactional producer with the
recovery it needs when its coordinator is SIGKILLed (`KafkaPythonTransactions`)."""

import socket
import struct
import threading
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


def _confluent_partitions(consumer, topic):
    found = consumer.list_topics(topic, timeout=10).topics.get(topic)
    return None if found is None or found.error is not None else found.partitions


def _partitions(ask, topic, timeout=30):
    """The partitions of `topic`, asking again while the answer has none (a topic just created
    is answered LEADER_NOT_AVAILABLE as a whole until each partition has had a leader), so a
    reader never takes a topic for one without partitions and reads nothing."""
    deadline = time.time() + timeout
    while True:
        partitions = ask()
        if partitions:
            return sorted(partitions)
        assert time.time() < deadline, f"no partitions of {topic} in {timeout} s"
        time.sleep(0.1)


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
    partitions = _partitions(lambda: _confluent_partitions(ends_reader, topic), topic)
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
    partitions = [TopicPartition(topic, p) for p in _partitions(lambda: ends_reader.partitions_for_topic(topic), topic)]
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


# kafka-python (3.0.12) and a SIGKILLed transaction coordinator. When the producer's sender
# cannot connect to the coordinator it has cached (the node was SIGKILLed: the connection is
# refused), `Sender._maybe_send_pending_request` catches the KafkaConnectionError that
# `KafkaNetClient.await_ready` raises, enqueues a FindCoordinator and breaks out of its loop,
# but re-enqueues the request it was sending only `if target_node is None`, and target_node
# still names the dead coordinator: the AddOffsetsToTxn, AddPartitionsToTxn, EndTxn or
# InitProducerId is dropped. The lookup itself works; the dropped request's result never
# completes, so `send_offsets_to_transaction`, `commit_transaction` and `abort_transaction`
# (which wait on it with no timeout) block forever, and the records of a dropped
# AddPartitionsToTxn are never sent. (The Java client's Sender re-enqueues the request in
# every such case.) The application recovers as Kafka's documentation says to recover from
# a producer that cannot go on: each transactional call gets a deadline, and on a timeout or
# an error the producer cannot abort, a new producer with the same transactional id, whose
# init_transactions() fences the old one and completes or aborts its open transaction.

KAFKA_PYTHON_TXN_CALL_S = 10
KAFKA_PYTHON_TXN_CONFIG = {
    "linger_ms": 5,
    # init_transactions() and send() give up after this (KafkaTimeoutError).
    "max_block_ms": 10000,
    "request_timeout_ms": 10000,
    # Expires the records of a dropped AddPartitionsToTxn, so the abandoned producer can close.
    "delivery_timeout_ms": 15000,
    "transaction_timeout_ms": 20000,
}


def bounded(call, timeout, what):
    """`call()`'s value or exception, or KafkaTimeoutError when it has not returned after
    `timeout` seconds (it goes on in a daemon thread, which a blocked kafka-python call never
    leaves: the producer it waits on is then abandoned)."""
    from kafka.errors import KafkaTimeoutError

    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as e:  # noqa: B036 - handed to the caller
            outcome["error"] = e

    thread = threading.Thread(target=run, name=f"bounded {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise KafkaTimeoutError(f"{what} did not return in {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _close_eventually(producer, timeout=60):
    """Closes an abandoned kafka-python producer: close() flushes first and raises
    KafkaTimeoutError while records wait (the dropped AddPartitionsToTxn's, until
    delivery_timeout_ms expires them), leaving its sender thread running."""
    from kafka.errors import KafkaError

    def run():
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                producer.close(timeout=1)
                return
            except KafkaError:
                time.sleep(0.5)

    threading.Thread(target=run, name="close abandoned producer", daemon=True).start()


class KafkaPythonTransactions:
    """kafka-python's transactional producer for `transactional_id`, with the recovery a
    SIGKILLed coordinator needs (see above): `call` bounds a transactional call, `recover`
    aborts after an abortable error and otherwise replaces the producer."""

    def __init__(self, bootstrap, transactional_id, timeout=60):
        self.bootstrap, self.transactional_id, self.timeout = bootstrap, transactional_id, timeout
        self.replaced = 0
        self.producer = self._initialised()

    def _initialised(self):
        from kafka import KafkaProducer
        from kafka.errors import KafkaTimeoutError

        deadline = time.time() + self.timeout
        while True:
            producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, transactional_id=self.transactional_id, **KAFKA_PYTHON_TXN_CONFIG
            )
            try:
                # Fences every older instance, and waits until the open transaction of the
                # newest one is committed (its EndTxn reached the coordinator) or aborted.
                producer.init_transactions()
                return producer
            except KafkaTimeoutError:
                # Its InitProducerId may be the request dropped: this instance would wait forever.
                _close_eventually(producer)
                if time.time() > deadline:
                    raise

    def call(self, what, method, *args):
        return bounded(lambda: getattr(self.producer, method)(*args), KAFKA_PYTHON_TXN_CALL_S, what)

    def recover(self, error):
        """After `error` from the transaction (whose outcome is then unknown only if its commit
        was called): aborts it if the producer can; otherwise (a timeout, a fatal error) a new
        producer ends it. Returns "aborted" or "replaced"."""
        from kafka.errors import KafkaError, KafkaTimeoutError

        if not isinstance(error, KafkaTimeoutError):
            try:
                self.call("abort_transaction", "abort_transaction")
                return "aborted"
            except KafkaError:
                pass  # a fatal error, or the abort itself stuck
        _close_eventually(self.producer)
        self.producer = None
        self.producer = self._initialised()
        self.replaced += 1
        return "replaced"

    def close(self):
        self.producer.close(timeout=10)
