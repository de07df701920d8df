"""Exactly-once consume-transform-produce with confluent-kafka (librdkafka) and kafka-python
against three `oxbow node` processes: a consumer group member (read_committed, no auto
commit) reads an input topic, and a transactional producer writes each input's transformed
record to an output topic of several partitions and sends the consumed offsets to the same
transaction (AddOffsetsToTxn, TxnOffsetCommit), committing every few records, while the node
coordinating the transactional id is SIGKILLed mid-transaction and started again. Errors are
handled as each client's documentation says: a retriable one by making the call again, an
abortable one by aborting and rewinding the consumer to the group's committed offsets. A
read_committed consumer of the output then reads every input exactly once, and the group's
committed offsets are the input's ends.

kafka-python (3.0.12) needs more: when it cannot connect to the coordinator it has cached
(SIGKILLed, so the connection is refused), it looks the coordinator up again but drops the
request it was about to send (AddOffsetsToTxn, AddPartitionsToTxn, EndTxn or InitProducerId),
and `send_offsets_to_transaction`, `commit_transaction` and `abort_transaction`, which wait for
that request's result with no timeout, never return (txn_tools has the details). So its loop
bounds each of these calls, and on a timeout, or an error after which the producer cannot
abort, closes the producer and creates a new one with the same transactional id, whose
init_transactions() fences the old one and completes or aborts its open transaction; then,
as after an abort, the consumer goes back to the group's committed offsets. confluent-kafka
(librdkafka) looks the coordinator up again and resends, and goes through the SIGKILL with
the calls alone."""

import collections
import threading
import time

import pytest

from txn_tools import KafkaPythonTransactions, coordinator_node, create_topic, read_confluent

INPUT_PARTITIONS = 3
OUTPUT_PARTITIONS = 4
INPUTS = 300
PER_TRANSACTION = 10
TIMEOUT = 30


def _produce_inputs(bootstrap, topic):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(INPUTS):
        producer.produce(topic, value=f"in-{i:03}".encode(), partition=i % INPUT_PARTITIONS)
    assert producer.flush(TIMEOUT) == 0


class Chaos:
    """Kills the transactional id's coordinator in the middle of the transaction after
    `kill_after` commits, and starts it again `restart_after_s` seconds later (as a process
    supervisor would), whatever the loop is doing then."""

    def __init__(self, nodes, transactional_id, kill_after=8, restart_after_s=5.0):
        self.nodes, self.transactional_id = nodes, transactional_id
        self.kill_after, self.restart_after_s = kill_after, restart_after_s
        self.killed = None
        self.restarted = False
        self.timer = None

    def mid_transaction(self, commits):
        if self.killed is None and commits >= self.kill_after:
            self.killed = coordinator_node(self.nodes, self.transactional_id)
            self.nodes.kill9(self.killed)
            self.timer = threading.Timer(self.restart_after_s, self._restart)
            self.timer.start()

    def _restart(self):
        self.nodes.start(self.killed)
        self.restarted = True

    def after_commit(self, commits):
        pass

    def join(self):
        if self.timer is not None:
            self.timer.join()


def _confluent_loop(bootstrap, source, sink, group, transactional_id, chaos, ends):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 5})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer.init_transactions(TIMEOUT)
    consumer.subscribe([source])

    def retrying(call):
        deadline = time.time() + TIMEOUT
        while True:
            try:
                return call()
            except KafkaException as e:
                if not e.args[0].retriable() or time.time() > deadline:
                    raise

    def rewind():
        # Back to what the group committed: the aborted transaction's inputs are read again.
        for tp in retrying(lambda: consumer.committed(consumer.assignment(), timeout=10)):
            tp.offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            consumer.seek(tp)

    committed = {p: 0 for p in ends}
    commits = aborts = 0
    deadline = time.time() + 120
    while any(committed[p] < ends[p] for p in ends):
        assert time.time() < deadline, f"committed {committed} of {ends}"
        messages = [m for m in consumer.consume(num_messages=PER_TRANSACTION, timeout=0.5) if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        try:
            for m in messages:
                value = m.value().decode()
                producer.produce(sink, key=value.encode(), value=f"out-{value}".encode())
            chaos.mid_transaction(commits)
            positions = consumer.position(consumer.assignment())
            metadata = consumer.consumer_group_metadata()
            retrying(lambda: producer.send_offsets_to_transaction(positions, metadata, TIMEOUT))
            retrying(lambda: producer.commit_transaction(TIMEOUT))
        except KafkaException as e:
            if not e.args[0].txn_requires_abort():
                raise
            aborts += 1
            retrying(lambda: producer.abort_transaction(TIMEOUT))
            rewind()
            continue
        commits += 1
        for tp in positions:
            if tp.offset >= 0:
                committed[tp.partition] = tp.offset
        chaos.after_commit(commits)
    consumer.close()
    return commits, aborts, 0


def _kafka_python_loop(bootstrap, source, sink, group, transactional_id, chaos, ends):
    from kafka import KafkaConsumer, OffsetAndMetadata
    from kafka.errors import (
        InvalidProducerEpochError,
        KafkaError,
        KafkaTimeoutError,
        ProducerFencedError,
        TransactionalIdAuthorizationFailedError,
    )

    # Nothing else uses the transactional id: a fence or a refusal is a failure.
    fatal = (ProducerFencedError, InvalidProducerEpochError, TransactionalIdAuthorizationFailedError)
    txn = KafkaPythonTransactions(bootstrap, transactional_id)
    consumer = KafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    committed = {p: 0 for p in ends}

    def rewind():
        # Back to what the group committed (read_committed asks with require_stable, so a
        # transaction still completing is waited for): the inputs of an aborted transaction are
        # read again, and those of a transaction whose commit went through unseen are not.
        for tp in consumer.assignment():
            deadline = time.time() + TIMEOUT
            while True:
                try:
                    offset = consumer.committed(tp, timeout_ms=5000)
                    break
                except KafkaTimeoutError:
                    assert time.time() < deadline, f"the committed offset of {tp}"
            if offset is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
                committed[tp.partition] = offset

    commits = aborts = 0
    deadline = time.time() + 120
    while any(committed[p] < ends[p] for p in ends):
        assert time.time() < deadline, f"committed {committed} of {ends}"
        batches = consumer.poll(timeout_ms=500, max_records=PER_TRANSACTION)
        records = [r for rs in batches.values() for r in rs]
        if not records:
            continue
        try:
            txn.producer.begin_transaction()
            for r in records:
                value = r.value.decode()
                txn.producer.send(sink, key=value.encode(), value=f"out-{value}".encode())
            chaos.mid_transaction(commits)
            positions = {tp: consumer.position(tp) for tp in consumer.assignment()}
            offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in positions.items()}
            txn.call("send_offsets_to_transaction", "send_offsets_to_transaction", offsets, consumer.group_metadata())
            txn.call("commit_transaction", "commit_transaction")
        except fatal:
            raise
        except KafkaError as e:
            # kafka-python retries retriable errors itself; what reaches here is abortable, or
            # the producer cannot go on (a timeout: see txn_tools), and a new one ends it.
            aborts += 1
            txn.recover(e)
            rewind()
            continue
        commits += 1
        for tp, offset in positions.items():
            committed[tp.partition] = offset
        chaos.after_commit(commits)
    consumer.close()
    txn.close()
    return commits, aborts, txn.replaced


def _group_offsets(bootstrap, topic, group):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(INPUT_PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_consume_transform_produce_exactly_once(nodes, client):
    loop = {"confluent": _confluent_loop, "kafka-python": _kafka_python_loop}[client]
    source, sink = f"ctp-in-{client}", f"ctp-out-{client}"
    group, transactional_id = f"ctp-group-{client}", f"ctp-txn-{client}"
    create_topic(nodes.bootstrap, source, INPUT_PARTITIONS)
    create_topic(nodes.bootstrap, sink, OUTPUT_PARTITIONS)
    _produce_inputs(nodes.bootstrap, source)
    ends = {p: len(range(p, INPUTS, INPUT_PARTITIONS)) for p in range(INPUT_PARTITIONS)}

    chaos = Chaos(nodes, transactional_id)
    started = time.time()
    commits, aborts, replaced = loop(nodes.bootstrap, source, sink, group, transactional_id, chaos, ends)
    took = time.time() - started
    chaos.join()
    assert chaos.killed is not None and chaos.restarted, "the coordinator was killed and started again"
    assert nodes.running(chaos.killed)

    read = collections.Counter(read_confluent(nodes.bootstrap, sink, "read_committed"))
    expected = {f"out-in-{i:03}" for i in range(INPUTS)}
    missing, extra = sorted(expected - set(read)), sorted(set(read) - expected)
    assert (missing, extra) == ([], []), f"missing {missing[:5]}, extra {extra[:5]}"
    duplicated = sorted(v for v, n in read.items() if n > 1)
    assert duplicated == [], f"{len(duplicated)} outputs more than once: {duplicated[:5]}"
    assert _group_offsets(nodes.bootstrap, source, group) == ends, "the offsets committed with the outputs"
    print(
        f"{client}: {INPUTS} inputs in {commits} transactions ({aborts} failed and rewound,"
        f" {replaced} of them ended by a new producer) through the SIGKILL of node {chaos.killed + 1}, the coordinator,"
        f" in {took:.1f} s"
    )
