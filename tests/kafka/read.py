"""An independent reader of Kafka topics for the integration tests (confluent-kafka, not
tidemark's client): every record of the topics from the beginning, as JSON lines
{"topic", "partition", "offset", "key", "value", "headers", "murmur2_partition"}, where key and
value are the record's bytes as text (null when absent) and murmur2_partition is the partition
Kafka's Java client would choose for the key: toPositive(murmur2(key)) % partitions.

    read.py BROKERS COUNT TOPIC...     # stops after COUNT records, or IDLE_SECS (30) without one
"""

import json
import os
import sys
import time

from confluent_kafka import Consumer, TopicPartition


def murmur2(data: bytes) -> int:
    """Kafka's org.apache.kafka.common.utils.Utils.murmur2, as a signed 32-bit int."""
    length = len(data)
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[i * 4:i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length & ~3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


assert murmur2(b"21") == -973932308
assert murmur2(b"foobar") == -790332482
assert murmur2(b"a-little-bit-long-string") == -985981536
assert murmur2(b"a-little-bit-longer-string") == -1486304829
assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
assert murmur2(b"abc") == 479470107


def main():
    brokers, count, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    c = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"tidemark-test-reader-{time.time_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    idle = float(os.environ.get("IDLE_SECS", "30"))
    # A topic the daemon is about to create may not exist yet: wait for it as for a record.
    deadline = time.monotonic() + idle
    while True:
        md = c.list_topics(timeout=10)
        missing = [t for t in topics if t not in md.topics or not md.topics[t].partitions]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    parts, counts = [], {}
    for t in topics:
        if t not in md.topics:
            sys.exit(f"read.py: no topic {t}")
        counts[t] = len(md.topics[t].partitions)
        parts += [TopicPartition(t, p, 0) for p in md.topics[t].partitions]
    # Assigned, not subscribed: no group join to wait for.
    c.assign(parts)
    seen, last = 0, time.time()
    while seen < count and time.time() - last < idle:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            sys.exit(f"read.py: {msg.error()}")
        key, value = msg.key(), msg.value()
        print(json.dumps({
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": None if key is None else key.decode(),
            "value": None if value is None else value.decode(),
            "headers": [[k, None if v is None else v.decode()] for k, v in (msg.headers() or [])],
            "murmur2_partition": None if key is None else (murmur2(key) & 0x7FFFFFFF) % counts[msg.topic()],
        }, ensure_ascii=False))
        seen += 1
        last = time.time()
    c.close()


if __name__ == "__main__":
    main()
