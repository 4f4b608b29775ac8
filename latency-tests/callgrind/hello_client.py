#!/usr/bin/env python3
"""Sends exactly N hello requests over C keep-alive connections (one in flight
per connection) and checks every response is 200. Used by instructions.sh to
count the server's instructions per request under callgrind; it is a fixed
request count, not a load test."""
import socket
import sys

port, total, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = b'{"foo":"hello world","bar":42}'
req = (b"POST /my_api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
bufs = [b""] * conns


def read_one(i):
    s = socks[i]
    while True:
        head_end = bufs[i].find(b"\r\n\r\n")
        if head_end >= 0:
            head = bufs[i][:head_end].decode()
            length = 0
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
            end = head_end + 4 + length
            if len(bufs[i]) >= end:
                if not head.startswith("HTTP/1.1 200"):
                    sys.exit(f"unexpected response: {head!r}")
                bufs[i] = bufs[i][end:]
                return
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("server closed the connection")
        bufs[i] += chunk


sent = 0
while sent < total:
    batch = min(conns, total - sent)
    for i in range(batch):
        socks[i].sendall(req)
    for i in range(batch):
        read_one(i)
    sent += batch
for s in socks:
    s.close()
