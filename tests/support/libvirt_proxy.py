#!/usr/bin/env python3
"""A proxy on the libvirt socket: it sits in front of the real libvirtd's Unix
socket and loses libvirt at the moment a boot is most fragile, around the
domain definition.

Usage: libvirt_proxy.py UPSTREAM_SOCKET LISTEN_SOCKET MODE
MODE after-define   forwards the define call and libvirtd's reply (the domain
                    is defined and kiln knows it), then cuts the connection
     before-reply   forwards the define call, drops libvirtd's reply (the
                    domain is defined, kiln cannot know it), and cuts
Either way it then stops listening, so libvirt stays out of reach through it
(a new connection is refused) until the test connects to libvirtd directly.
Prints "ready" as the first line of stdout once it listens, then "cut" to
stderr when it cut; serves until killed.

libvirt's RPC (src/rpc/virnetprotocol.x): every message is a 4-byte big-endian
length (itself included), then a header of six 32-bit words: program,
version, procedure, type (0 call, 1 reply), serial, status.
"""
import os
import socket
import struct
import sys
import threading

REMOTE_PROGRAM = 0x20008086
DEFINE_PROCEDURES = {11, 350}  # REMOTE_PROC_DOMAIN_DEFINE_XML, ..._DEFINE_XML_FLAGS
TYPE_REPLY = 1

upstream_path, listen_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
assert mode in ("after-define", "before-reply"), mode

listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
if os.path.exists(listen_path):
    os.unlink(listen_path)
listener.bind(listen_path)
listener.listen(16)
cut_done = threading.Event()


def read_message(sock):
    """One whole RPC message, or b"" at end of stream."""
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return b""
        head += chunk
    (length,) = struct.unpack(">I", head)
    body = b""
    while len(body) < length - 4:
        chunk = sock.recv(length - 4 - len(body))
        if not chunk:
            return b""
        body += chunk
    return head + body


def header(message):
    return struct.unpack(">IIiiIi", message[4:28]) if len(message) >= 28 else None


def cut(client, server):
    cut_done.set()
    for sock in (client, server):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
    try:
        listener.close()  # nobody reaches libvirt through this proxy any more
        os.unlink(listen_path)
    except OSError:
        pass
    print("cut", file=sys.stderr, flush=True)


def refuse(client):
    # A connection accepted just before the cut (or queued behind it) must
    # see libvirt gone, not a silent peer: virConnectOpen would wait forever.
    try:
        client.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    client.close()


def serve(client):
    if cut_done.is_set():
        refuse(client)
        return
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.connect(upstream_path)
    lock = threading.Lock()
    define_serials = set()

    def server_to_client():
        while True:
            try:
                message = read_message(server)
            except OSError:
                return
            if not message:
                client.close()
                return
            fields = header(message)
            with lock:
                ours = fields is not None and fields[3] == TYPE_REPLY and fields[4] in define_serials
            if ours:
                if mode == "after-define":
                    client.sendall(message)
                cut(client, server)
                return
            try:
                client.sendall(message)
            except OSError:
                return

    threading.Thread(target=server_to_client, daemon=True).start()
    while True:
        try:
            message = read_message(client)
        except OSError:
            return
        if not message or cut_done.is_set():
            server.close()
            refuse(client)
            return
        fields = header(message)
        if fields is not None and fields[0] == REMOTE_PROGRAM and fields[2] in DEFINE_PROCEDURES and fields[3] == 0:
            with lock:
                define_serials.add(fields[4])
        try:
            server.sendall(message)
        except OSError:
            return


print("ready", flush=True)
while not cut_done.is_set():
    try:
        connection, _ = listener.accept()
    except OSError:
        break
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
cut_done.wait()
threading.Event().wait()  # until killed
