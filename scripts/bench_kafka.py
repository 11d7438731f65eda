"""The Kafka ceiling of scripts/bench.sh (k0): a plain librdkafka producer (confluent-kafka), with
the settings tidemark's Kafka sink uses (idempotent, acks=all, murmur2), sending COUNT
pre-encoded records — a `{"id":N}` key and a value of VALUE_BYTES — into a new topic of
PARTITIONS partitions, until every delivery report is in. Prints the seconds it took.

    bench_kafka.py BROKERS TOPIC PARTITIONS COUNT VALUE_BYTES
"""

import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    brokers, topic = sys.argv[1], sys.argv[2]
    partitions, count, size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    admin = AdminClient({"bootstrap.servers": brokers})
    for f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        f.result()
    value = b"x" * size
    keys = [b'{"id":%d}' % i for i in range(1, count + 1)]
    p = Producer({
        "bootstrap.servers": brokers,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "queue.buffering.max.messages": 1000000,
    })
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    t0 = time.monotonic()
    for k in keys:
        while True:
            try:
                p.produce(topic, key=k, value=value, on_delivery=report)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)
    elapsed = time.monotonic() - t0
    if failed:
        sys.exit(f"bench_kafka.py: {len(failed)} deliveries failed, e.g. {failed[0]}")
    print(f"{elapsed:.3f}")


if __name__ == "__main__":
    main()
