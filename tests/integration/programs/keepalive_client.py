"""An HTTP/1.1 client that keeps one connection open and asks again and again.

    python3 keepalive_client.py PORT PATH INTERVAL_MS

Sends "GET PATH" on one TCP connection to 127.0.0.1:PORT every INTERVAL_MS ms until it is
killed, reading each response whole (by its Content-Length). For each request it prints one
line, flushed: "INDEX START_NS REQUEST_OFFSET RESPONSE_OFFSET STATUS", where the offsets are
the bytes this connection had sent and received before the request (what a span of it must
report as request_offset and response_offset) and START_NS is the wall clock (ns since the
Unix epoch) just before the send.
"""
import socket
import sys
import time


def read_response(sock, pending):
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    size = len(head) + 4 + length
    return status, size, rest[length:]


def main():
    port, path, interval = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) / 1000.0
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sent = received = 0
    pending = b""
    index = 0
    while True:
        start = time.time_ns()
        sock.sendall(request)
        status, size, pending = read_response(sock, pending)
        print(index, start, sent, received, status, flush=True)
        sent += len(request)
        received += size
        index += 1
        time.sleep(interval)


if __name__ == "__main__":
    main()
