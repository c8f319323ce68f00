#!/usr/bin/python3
"""TCP -> Unix-socket forwarder: makes a server of the test process reachable inside a netns.

usage: fwd.py LISTEN_HOST LISTEN_PORT UNIX_SOCKET_PATH

Run it inside the netns (nsenter --net=...). It listens on LISTEN_HOST:LISTEN_PORT there and
pipes every accepted connection, byte for byte, to UNIX_SOCKET_PATH (a filesystem path, so it
reaches a listener in any netns). TLS passes through untouched. Prints "LISTENING host:port"
on stderr once ready; runs until killed.
"""
import socket
import sys
import threading


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def handle(client, path):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    t.start()
    pump(client, upstream)
    t.join()
    client.close()
    upstream.close()


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)
    print(f"LISTENING {host}:{srv.getsockname()[1]}", file=sys.stderr, flush=True)
    while True:
        client, _ = srv.accept()
        # As a real API server's socket (Go sets TCP_NODELAY on every TCP connection): with Nagle on,
        # a small write that follows one not yet acknowledged waits for the client's delayed ACK
        # (40 ms), which stalled Go clients' pod GETs in about half of the runs.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(client, path), daemon=True).start()


if __name__ == "__main__":
    main()
