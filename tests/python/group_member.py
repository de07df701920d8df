"""One consumer-group member, run as its own process so a test can kill it.

    python group_member.py CLIENT BOOTSTRAP TOPIC GROUP

CLIENT is `confluent` (librdkafka, cooperative-sticky assignor) or `kafka-python` (its default
range and round-robin assignors). Prints one JSON object per line on stdout:
{"assignment": [partitions]} whenever the assignment changes, and
{"record": value, "partition": p, "offset": o} per record, printed before its offset is
committed (synchronously, after each poll).
"""

import json
import sys


def say(**fields):
    print(json.dumps(fields), flush=True)


def confluent(bootstrap, topic, group):
    from confluent_kafka import Consumer, KafkaException

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    consumer.subscribe([topic])
    last = None
    while True:
        messages = consumer.consume(num_messages=100, timeout=0.2)
        for m in messages:
            if m.error():
                continue
            say(record=m.value().decode(), partition=m.partition(), offset=m.offset())
        if any(not m.error() for m in messages):
            try:
                consumer.commit(asynchronous=False)
            except KafkaException:
                pass  # a rebalance took the partitions; the next owner reads from the last commit
        assignment = sorted(tp.partition for tp in consumer.assignment())
        if assignment != last:
            last = assignment
            say(assignment=assignment)


def kafka_python(bootstrap, topic, group):
    from kafka import KafkaConsumer
    from kafka.errors import CommitFailedError, KafkaError

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    last = None
    while True:
        # A long poll: kafka-python 3.0.12 can drop a finished JoinGroup/SyncGroup result when
        # a poll's timeout expires while the rebalance is in flight (the member then never
        # applies its assignment, stops heartbeating and is removed). Seen against oxbow with
        # 200 ms polls in about one run of ten; a poll long enough for a whole rebalance
        # makes that expiry rare.
        batches = consumer.poll(timeout_ms=3000)
        for records in batches.values():
            for r in records:
                say(record=r.value.decode(), partition=r.partition, offset=r.offset)
        if batches:
            try:
                consumer.commit()
            except (CommitFailedError, KafkaError):
                pass
        assignment = sorted(tp.partition for tp in consumer.assignment())
        if assignment != last:
            last = assignment
            say(assignment=assignment)


if __name__ == "__main__":
    import logging

    # The clients' group protocol logs, for a failure's post-mortem (pytest keeps them in
    # the test's tmp_path).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger("kafka.coordinator").setLevel(logging.DEBUG)
    client, bootstrap, topic, group = sys.argv[1:5]
    {"confluent": confluent, "kafka-python": kafka_python}[client](bootstrap, topic, group)
