#!/usr/bin/env python3
"""kilnd's RPC under load, through its Unix socket (not run in CI).

  rpc_bench.py list <socket> <seconds> <clients>
      GET /v1/instances as fast as <clients> keep-alive connections can:
      requests/s and p50/p99 latency in ms.
  rpc_bench.py boot <socket> <image id> <boots> [<Glance URL>]
      warm boots (start=false) one after another, each timed from POST
      /v1/instances to its operation reading "succeeded" (a long poll),
      each deleted afterwards (not timed): p50/p99 in ms. With a Glance URL
      the image record is read once and sent with every boot, as a
      controller passes nova's image_meta, so kilnd need not ask Glance.
  rpc_bench.py storm <socket> <image id> <boots> <Glance's log file>
      <boots> concurrent boots (start=false) of one uncached image, each on
      its own connection, timed from the first POST to the last operation
      succeeded; counts the requests for the image's record and file in
      Glance's log meanwhile: "<ms> <record GETs> <file GETs>".
"""
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.request
import uuid


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("kilnd")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(connection, method, target, body=None):
    data = json.dumps(body) if body is not None else None
    connection.request(method, target, body=data, headers={"Content-Type": "application/json"} if data else {})
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"null")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_list(path, seconds, clients):
    latencies, lock, deadline = [], threading.Lock(), time.monotonic() + seconds
    count = call(UnixConnection(path), "GET", "/v1/instances")[1]["instances"]

    def client():
        connection, mine = UnixConnection(path), []
        while time.monotonic() < deadline:
            start = time.perf_counter()
            status, _ = call(connection, "GET", "/v1/instances")
            assert status == 200
            mine.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    print(f"GET /v1/instances with {len(count)} instances, {clients} clients: {len(latencies) / elapsed:.0f} req/s, "
          f"p50 {percentile(latencies, 0.5):.2f} ms, p99 {percentile(latencies, 0.99):.2f} ms")


def bench_boot(path, image_id, boots, glance_url=None):
    connection, latencies = UnixConnection(path), []
    record = None
    if glance_url:
        with urllib.request.urlopen(f"{glance_url}/v2/images/{image_id}") as answer:
            record = json.load(answer)

    def boot_and_wait(instance):
        request = {"uuid": instance, "image_id": image_id, "start": False,
                   "flavor": {"vcpus": 1, "memory_mb": 64, "root_gb": 1}}
        if record:
            request["image"] = record
        status, body = call(connection, "POST", "/v1/instances", request)
        assert status == 202, body
        while True:  # a long poll: answered the moment the operation finishes
            _, operation = call(connection, "GET", "/v1/operations/" + body["operation_id"] + "?wait=30")
            if operation["state"] in ("succeeded", "failed"):
                assert operation["state"] == "succeeded", operation
                return

    def delete(instance):
        _, body = call(connection, "DELETE", "/v1/instances/" + instance)
        while call(connection, "GET", "/v1/operations/" + body["operation_id"] + "?wait=30")[1]["state"] not in (
                "succeeded", "failed"):
            pass

    first = str(uuid.uuid4())
    boot_and_wait(first)  # fills the cache
    delete(first)
    for _ in range(boots):
        instance = str(uuid.uuid4())
        start = time.perf_counter()
        boot_and_wait(instance)
        latencies.append((time.perf_counter() - start) * 1000)
        delete(instance)
    carried = ", image record in the request" if record else ""
    print(f"warm boot through kilnd's socket ({boots} boots{carried}): p50 {percentile(latencies, 0.5):.2f} ms, "
          f"p99 {percentile(latencies, 0.99):.2f} ms")


def glance_requests(log, offset, image_id):
    """(record GETs, file GETs) for image_id in Glance's log after offset."""
    with open(log, errors="replace") as f:
        f.seek(offset)
        lines = f.read().splitlines()
    record = sum(1 for line in lines if f"GET /v2/images/{image_id} " in line)
    file = sum(1 for line in lines if f"GET /v2/images/{image_id}/file " in line)
    return record, file


def bench_storm(path, image_id, boots, glance_log):
    offset = os.path.getsize(glance_log)
    barrier = threading.Barrier(boots + 1)
    failures = []

    def boot():
        connection = UnixConnection(path)
        connection.connect()  # before the clock starts
        barrier.wait()
        request = {"uuid": str(uuid.uuid4()), "image_id": image_id, "start": False,
                   "flavor": {"vcpus": 1, "memory_mb": 64, "root_gb": 1}}
        status, body = call(connection, "POST", "/v1/instances", request)
        if status != 202:
            failures.append(body)
            return
        while True:
            _, operation = call(connection, "GET", "/v1/operations/" + body["operation_id"] + "?wait=60")
            if operation["state"] in ("succeeded", "failed"):
                if operation["state"] != "succeeded":
                    failures.append(operation)
                return

    threads = [threading.Thread(target=boot) for _ in range(boots)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = (time.perf_counter() - start) * 1000
    assert not failures, failures[0]
    time.sleep(0.2)  # Glance writes its access line after the response
    record, file = glance_requests(glance_log, offset, image_id)
    print(f"{elapsed:.0f} {record} {file}")


if __name__ == "__main__":
    if sys.argv[1] == "list":
        bench_list(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "storm":
        bench_storm(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        bench_boot(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
