"""kafka-python and confluent-kafka (librdkafka) against oxbow, unchanged: admin, idempotent
acks=all produce, and consume by assignment (consumer groups: test_groups.py)."""

import time

import pytest


def _wait_for_topic(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + 30
    while time.time() < deadline:
        found = admin.list_topics(topic, timeout=2).topics.get(topic)
        if found and found.error is None and len(found.partitions) == partitions and all(
            p.leader > 0 for p in found.partitions.values()
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"{topic} has no leaders")


def test_kafka_python_admin_produce_consume(cluster):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewPartitions, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=cluster)
    admin.create_topics([NewTopic("kp-topic", num_partitions=2, replication_factor=3)])
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic("kp-topic", num_partitions=2, replication_factor=3)])
    admin.create_partitions({"kp-topic": NewPartitions(total_count=3)})
    _wait_for_topic(cluster, "kp-topic", 3)

    # kafka-python is idempotent with acks=all by default.
    producer = KafkaProducer(bootstrap_servers=cluster, acks="all")
    futures = [producer.send("kp-topic", value=f"kp-{i}".encode(), partition=i % 3) for i in range(300)]
    producer.flush()
    acked = [f.get(timeout=30) for f in futures]
    assert all(m.offset >= 0 for m in acked)
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=cluster, group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition("kp-topic", p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    got = []
    deadline = time.time() + 30
    while len(got) < 300 and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value.decode() for r in records)
    consumer.close()
    assert sorted(got) == sorted(f"kp-{i}" for i in range(300))
    for p in range(3):
        in_partition = [v for v in got if int(v.split("-")[1]) % 3 == p]
        assert in_partition == [f"kp-{i}" for i in range(p, 300, 3)], "order within a partition"

    admin.delete_topics(["kp-topic"])
    admin.close()


def test_confluent_kafka_admin_produce_consume(cluster):
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    admin = AdminClient({"bootstrap.servers": cluster})
    futures = admin.create_topics([NewTopic("ck-topic", num_partitions=3, replication_factor=2)])
    futures["ck-topic"].result(timeout=30)
    _wait_for_topic(cluster, "ck-topic", 3)
    resource = ConfigResource(ConfigResource.Type.TOPIC, "ck-topic")
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "delete"

    delivered = []
    producer = Producer({"bootstrap.servers": cluster, "enable.idempotence": True, "acks": "all"})
    for i in range(300):
        producer.produce(
            "ck-topic",
            value=f"ck-{i}".encode(),
            key=f"key-{i % 10}".encode(),
            on_delivery=lambda err, msg: delivered.append((err, msg.partition(), msg.offset())),
        )
    assert producer.flush(30) == 0
    assert len(delivered) == 300 and all(err is None for err, _, _ in delivered)

    consumer = Consumer(
        {
            "bootstrap.servers": cluster,
            "group.id": "assign-only",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition("ck-topic", p, 0) for p in range(3)])
    got = {}
    at_end = set()
    deadline = time.time() + 30
    while len(at_end) < 3 and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
            continue
        got[(message.partition(), message.offset())] = message.value().decode()
    consumer.close()
    assert len(got) == 300
    assert {(p, o) for _, p, o in delivered} == set(got.keys()), "acknowledged offsets hold the records"

    admin.delete_topics(["ck-topic"])["ck-topic"].result(timeout=30)
