"""Transactions with confluent-kafka (librdkafka) and kafka-python against three `oxbow node`
processes: aborted transactions are invisible to read_committed consumers and visible to
read_uncommitted ones; a second producer with the same transactional id fences the first,
whose next commit fails with the clients' fencing error; and transactions committed while the
transaction coordinator's node is SIGKILLed and started again are each read exactly once
(kafka-python with a new producer when the SIGKILL leaves the old one stuck: see txn_tools).
(Consume-transform-produce with offsets in the transaction: test_transactions_offsets.py.)"""

import collections
import time

import pytest

from txn_tools import KafkaPythonTransactions, coordinator_node, create_topic, read_confluent, read_kafka_python

PARTITIONS = 3
TIMEOUT = 30


def _confluent_producer(bootstrap, transactional_id):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 5})
    producer.init_transactions(TIMEOUT)
    return producer


def _kafka_python_producer(bootstrap, transactional_id):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id, linger_ms=5)
    producer.init_transactions()
    return producer


def _confluent_rounds(bootstrap, topic, rounds):
    """Runs `rounds` ((name, commit?) pairs) of 12 records each, in one transaction a round."""
    producer = _confluent_producer(bootstrap, f"{topic}-txn")
    for name, commit in rounds:
        producer.begin_transaction()
        for i in range(12):
            producer.produce(topic, value=f"{name}-{i:02}".encode(), partition=i % PARTITIONS)
        if commit:
            producer.commit_transaction(TIMEOUT)
        else:
            # The records reach their partitions first, so the abort has something to hide.
            assert producer.flush(TIMEOUT) == 0
            producer.abort_transaction(TIMEOUT)


def _kafka_python_rounds(bootstrap, topic, rounds):
    producer = _kafka_python_producer(bootstrap, f"{topic}-txn")
    for name, commit in rounds:
        producer.begin_transaction()
        futures = [
            producer.send(topic, value=f"{name}-{i:02}".encode(), partition=i % PARTITIONS) for i in range(12)
        ]
        if commit:
            producer.commit_transaction()
        else:
            producer.flush()
            assert all(f.get(timeout=TIMEOUT).offset >= 0 for f in futures), "written before the abort"
            producer.abort_transaction()
    producer.close()


CLIENTS = {
    "confluent": (_confluent_rounds, read_confluent),
    "kafka-python": (_kafka_python_rounds, read_kafka_python),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_aborted_transactions_are_invisible_to_read_committed_only(nodes, client):
    rounds_of, read = CLIENTS[client]
    topic = f"txn-abort-{client}"
    create_topic(nodes.bootstrap, topic, PARTITIONS)
    rounds = [("first", True), ("aborted", False), ("last", True), ("aborted-again", False)]
    started = time.time()
    rounds_of(nodes.bootstrap, topic, rounds)
    every = sorted(f"{name}-{i:02}" for name, _ in rounds for i in range(12))
    committed = sorted(v for v in every if v.startswith(("first-", "last-")))

    # Each reader reads to the partitions' ends, markers included, so nothing more can come.
    assert sorted(read(nodes.bootstrap, topic, "read_committed")) == committed
    assert sorted(read(nodes.bootstrap, topic, "read_uncommitted")) == every
    print(f"{client}: four transactions and both reads in {time.time() - started:.1f} s")


def _fenced_confluent(bootstrap, topic):
    """The older instance's error on its commit after a newer one initialised."""
    from confluent_kafka import KafkaError, KafkaException

    older = _confluent_producer(bootstrap, f"{topic}-txn")
    older.begin_transaction()
    older.produce(topic, value=b"older-committed", partition=0)
    older.commit_transaction(TIMEOUT)

    newer = _confluent_producer(bootstrap, f"{topic}-txn")
    older.begin_transaction()
    older.produce(topic, value=b"older-fenced", partition=1)
    with pytest.raises(KafkaException) as raised:
        older.commit_transaction(TIMEOUT)
    error = raised.value.args[0]
    assert error.fatal(), f"a fatal error: {error}"
    assert error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED), f"fenced: {error}"

    newer.begin_transaction()
    newer.produce(topic, value=b"newer-committed", partition=1)
    newer.commit_transaction(TIMEOUT)
    return error


def _fenced_kafka_python(bootstrap, topic):
    from kafka.errors import KafkaError, ProducerFencedError

    older = _kafka_python_producer(bootstrap, f"{topic}-txn")
    older.begin_transaction()
    older.send(topic, value=b"older-committed", partition=0)
    older.commit_transaction()

    newer = _kafka_python_producer(bootstrap, f"{topic}-txn")
    older.begin_transaction()
    sent = older.send(topic, value=b"older-fenced", partition=1)
    with pytest.raises(KafkaError) as raised:
        older.commit_transaction()
    # ProducerFencedError itself when the commit meets the fence; when the sender thread met
    # it first (adding the partition), kafka-python's KafkaError "Cannot execute transactional
    # method because we are in an error state: [Error 90] ProducerFencedError".
    assert isinstance(raised.value, ProducerFencedError) or "ProducerFencedError" in str(raised.value), raised.value
    # Fatal: the instance cannot begin again.
    with pytest.raises(KafkaError):
        older.begin_transaction()
    # The record's own delivery fails too.
    with pytest.raises(Exception):
        sent.get(timeout=TIMEOUT)
    older.close(timeout=5)

    newer.begin_transaction()
    newer.send(topic, value=b"newer-committed", partition=1)
    newer.commit_transaction()
    newer.close()
    return raised.value


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_second_instance_fences_the_first(nodes, client):
    fenced, read = {
        "confluent": (_fenced_confluent, read_confluent),
        "kafka-python": (_fenced_kafka_python, read_kafka_python),
    }[client]
    topic = f"txn-fence-{client}"
    create_topic(nodes.bootstrap, topic, PARTITIONS)
    error = fenced(nodes.bootstrap, topic)
    print(f"{client}: the fenced instance's commit raised {error!r}")
    assert sorted(read(nodes.bootstrap, topic, "read_committed")) == ["newer-committed", "older-committed"]


KILL_TRANSACTIONS = 60


def _confluent_kill_rounds(nodes, topic, transactional_id, chaos):
    """Each error handled as librdkafka's documentation says (retriable: the call again;
    abortable: abort, then the transaction again)."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer({"bootstrap.servers": nodes.bootstrap, "transactional.id": transactional_id, "linger.ms": 5})
    producer.init_transactions(TIMEOUT)

    def retrying(call):
        deadline = time.time() + TIMEOUT
        while True:
            try:
                return call()
            except KafkaException as e:
                if not e.args[0].retriable() or time.time() > deadline:
                    raise

    aborts = committed = 0
    while committed < KILL_TRANSACTIONS:
        values = [f"r-{committed:02}-{i}" for i in range(5)]
        producer.begin_transaction()
        try:
            for i, value in enumerate(values):
                producer.produce(topic, value=value.encode(), key=value.encode())
                chaos.mid_transaction(committed, i)
            retrying(lambda: producer.commit_transaction(TIMEOUT))
            committed += 1
        except KafkaException as e:
            if not e.args[0].txn_requires_abort():
                raise
            aborts += 1
            retrying(lambda: producer.abort_transaction(TIMEOUT))
        chaos.after_commit(committed)
    return aborts, 0


def _kafka_python_kill_rounds(nodes, topic, transactional_id, chaos):
    """An abortable error: abort, then the transaction again; a timeout or an error the
    producer cannot abort after: a new producer (txn_tools.KafkaPythonTransactions), then the
    transaction again unless read_committed reads it already (its commit went through before
    the new producer's init_transactions, which waits for it to complete)."""
    from kafka.errors import (
        InvalidProducerEpochError,
        KafkaError,
        ProducerFencedError,
        TransactionalIdAuthorizationFailedError,
    )

    txn = KafkaPythonTransactions(nodes.bootstrap, transactional_id)
    aborts = committed = 0
    while committed < KILL_TRANSACTIONS:
        values = [f"r-{committed:02}-{i}" for i in range(5)]
        try:
            txn.producer.begin_transaction()
            for i, value in enumerate(values):
                txn.producer.send(topic, value=value.encode(), key=value.encode())
                chaos.mid_transaction(committed, i)
            txn.call("commit_transaction", "commit_transaction")
            committed += 1
        except (ProducerFencedError, InvalidProducerEpochError, TransactionalIdAuthorizationFailedError):
            # Nothing else uses the transactional id: a fence or a refusal is a failure.
            raise
        except KafkaError as e:
            # The outcome of a transaction whose producer was replaced is known now: its commit
            # went through before the new producer's init_transactions, or it was aborted. (Read
            # with librdkafka: kafka-python's consumer raises ECONNREFUSED when its metadata
            # request goes to the node still down.)
            replaced = txn.recover(e) == "replaced"
            if replaced and set(values) <= set(read_confluent(nodes.bootstrap, topic, "read_committed")):
                committed += 1
            else:
                aborts += 1
        chaos.after_commit(committed)
    txn.close()
    return aborts, txn.replaced


class KillOnce:
    """SIGKILLs the transactional id's coordinator in the middle of transaction 20 (records of
    it on their way) and starts it again 10 transactions later."""

    def __init__(self, nodes, transactional_id):
        self.nodes, self.transactional_id = nodes, transactional_id
        self.killed, self.restarted, self.at = None, False, None

    def mid_transaction(self, committed, record):
        if committed == 20 and record == 2 and self.killed is None:
            self.killed = coordinator_node(self.nodes, self.transactional_id)
            self.nodes.kill9(self.killed)
            self.at = committed

    def after_commit(self, committed):
        if self.killed is not None and not self.restarted and committed >= self.at + 10:
            self.nodes.start(self.killed)
            self.restarted = True


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_transactions_through_a_sigkill_of_the_coordinator(nodes, client):
    """60 transactions of 5 records while the node coordinating the transactional id is
    SIGKILLed in the middle of one and started again; read_committed reads every record
    exactly once."""
    rounds = {"confluent": _confluent_kill_rounds, "kafka-python": _kafka_python_kill_rounds}[client]
    topic, transactional_id = f"txn-kill-{client}", f"txn-kill-producer-{client}"
    create_topic(nodes.bootstrap, topic, PARTITIONS)
    chaos = KillOnce(nodes, transactional_id)
    started = time.time()
    aborts, replaced = rounds(nodes, topic, transactional_id, chaos)
    took = time.time() - started
    assert chaos.killed is not None and chaos.restarted
    assert nodes.running(chaos.killed), "the restarted node runs"

    read = collections.Counter(read_confluent(nodes.bootstrap, topic, "read_committed"))
    expected = {f"r-{t:02}-{i}" for t in range(KILL_TRANSACTIONS) for i in range(5)}
    assert set(read) == expected, f"missing {sorted(expected - set(read))[:5]}, extra {sorted(set(read) - expected)[:5]}"
    assert [v for v, n in read.items() if n > 1] == [], "every record once"
    print(
        f"{client}: {KILL_TRANSACTIONS} transactions through the coordinator's SIGKILL (node {chaos.killed + 1})"
        f" in {took:.1f} s, {aborts} aborted and redone, {replaced} producers replaced"
    )
