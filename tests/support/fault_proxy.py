#!/usr/bin/env python3
"""A loopback TCP proxy in front of the real Glance, for faults Glance cannot
produce by itself: it records every request line it forwards, and can cut or
stall the first N responses to image downloads after a number of bytes.

Usage: fault_proxy.py UPSTREAM_PORT LOG_FILE [--cut BYTES] [--stall BYTES] [--times N]
                      [--strip-length] [--swap-image ASKED SERVED]
--strip-length sends the faulted downloads without their Content-Length
(the body then ends where the connection closes, so a cut looks complete).
--swap-image answers requests for image ASKED with image SERVED (a lying or
misrouting endpoint); --fail-records N answers the first N image-record GETs
with 503; --delay-records S holds each image-record GET S seconds.
Prints the port it listens on as the first line of stdout, then serves until killed.
LOG_FILE gets one line per request: the request line and its Range header.
"""
import argparse
import socket
import sys
import threading

parser = argparse.ArgumentParser()
parser.add_argument("upstream_port", type=int)
parser.add_argument("log_file")
parser.add_argument("--cut", type=int, default=None, help="close after this many response bytes")
parser.add_argument("--stall", type=int, default=None, help="stop forwarding after this many response bytes")
parser.add_argument("--times", type=int, default=1, help="how many /file downloads get the fault")
parser.add_argument("--strip-length", action="store_true",
                    help="faulted downloads lose Content-Length and end with the connection")
parser.add_argument("--swap-image", nargs=2, default=None, metavar=("ASKED", "SERVED"))
parser.add_argument("--delay-records", type=float, default=0,
                    help="hold every image-record GET this many seconds before forwarding it")
parser.add_argument("--delay-downloads", type=float, default=0,
                    help="hold every GET .../file this many seconds before forwarding it")
parser.add_argument("--fail-records", type=int, default=0,
                    help="answer this many image-record GETs with 503 Service Unavailable")
args = parser.parse_args()

lock = threading.Lock()
faults_left = args.times


def log(line):
    with lock, open(args.log_file, "a") as f:
        f.write(line + "\n")


def read_request_head(client):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return None, data
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1"), data


def take_fault(request_line):
    global faults_left
    if " /v2/images/" not in request_line or "/file " not in request_line:
        return None
    with lock:
        if faults_left <= 0:
            return None
        faults_left -= 1
    return ("cut", args.cut) if args.cut is not None else ("stall", args.stall) if args.stall is not None else None


record_failures_left = args.fail_records


def is_record_get(request_line):
    parts = request_line.split(" ")
    return len(parts) >= 2 and parts[0] == "GET" and parts[1].startswith("/v2/images/") and "/file" not in parts[1]


def take_record_failure(request_line):
    global record_failures_left
    if not is_record_get(request_line):
        return False
    with lock:
        if record_failures_left <= 0:
            return False
        record_failures_left -= 1
    return True


def serve(client):
    upstream = socket.create_connection(("127.0.0.1", args.upstream_port))
    head, data = read_request_head(client)
    if head is None:
        client.close()
        upstream.close()
        return
    lines = head.split("\r\n")
    ranges = [l for l in lines[1:] if l.lower().startswith("range:")]
    log(lines[0] + ("  " + ranges[0] if ranges else ""))
    if take_record_failure(lines[0]):
        client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        client.close()
        upstream.close()
        return
    if args.delay_records and is_record_get(lines[0]):
        threading.Event().wait(args.delay_records)
    if args.delay_downloads and "/file " in lines[0]:
        threading.Event().wait(args.delay_downloads)
    fault = take_fault(lines[0])
    if args.swap_image:
        asked, served = ("/v2/images/" + i for i in args.swap_image)
        data = data.replace(asked.encode(), served.encode(), 1)
    upstream.sendall(data)

    def forward_requests():
        try:
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    break
                upstream.sendall(chunk)
        except OSError:
            pass

    threading.Thread(target=forward_requests, daemon=True).start()
    sent = 0
    head_pending = fault is not None and args.strip_length
    buffered = b""
    try:
        while True:
            chunk = upstream.recv(65536)
            if not chunk:
                break
            if head_pending:
                buffered += chunk
                if b"\r\n\r\n" not in buffered:
                    continue
                response_head, body = buffered.split(b"\r\n\r\n", 1)
                kept = [l for l in response_head.split(b"\r\n") if not l.lower().startswith(b"content-length:")]
                head = b"\r\n".join(kept + [b"Connection: close"]) + b"\r\n\r\n"
                client.sendall(head)
                head_pending, chunk = False, body
                if not chunk:
                    continue
            if fault is not None and sent + len(chunk) >= fault[1]:
                client.sendall(chunk[: fault[1] - sent])
                if fault[0] == "stall":
                    threading.Event().wait(3600)  # hold the connection open, silent
                break
            client.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    for s in (client, upstream):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
