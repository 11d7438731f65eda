"""Produce captured records into a new one-partition topic, in order, for the integration tests
(confluent-kafka): each line of FILE is {"topic", "key", "value"} as scripts/conformance/debezium.py
writes them; a null value is a tombstone.

    produce.py BROKERS TOPIC FILE
"""

import json
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    brokers, topic, path = sys.argv[1], sys.argv[2], sys.argv[3]
    admin = AdminClient({"bootstrap.servers": brokers})
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        f.result()
    p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})
    n = 0
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            key = None if r["key"] is None else r["key"].encode()
            value = None if r["value"] is None else r["value"].encode()
            p.produce(topic, key=key, value=value)
            n += 1
    if p.flush(30) != 0:
        sys.exit("produce.py: records left undelivered")
    print(n)


if __name__ == "__main__":
    main()
