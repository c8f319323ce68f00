#!/usr/bin/python3
"""Accept ONE TCP connection and report where the client meant to go (SO_ORIGINAL_DST).

usage: origdst.py HOST PORT [TIMEOUT_SECONDS] [REPLY]

- binds HOST:PORT (PORT 0 = ephemeral; HOST with ':' = IPv6), then prints
  "LISTENING <host>:<port>" on stderr;
- accepts one connection, reads what the client sends (up to a newline, EOF or 1 s),
  answers REPLY (default "origdst-ok\\n"), and prints ONE JSON line on stdout:
  {"peer": "ip:port", "local": "ip:port", "original_dst": "ip:port" | null,
   "original_dst_error": "..." (only when getsockopt failed), "received": "..."}
- exits 0 after that connection, or prints {"error": "timeout"} and exits 2 when nobody
  connects within TIMEOUT_SECONDS (default 10).

SO_ORIGINAL_DST (netfilter, linux/netfilter_ipv4.h) = 80 at SOL_IP: a struct sockaddr_in,
port at bytes 2-3 and IPv4 address at 4-7, network byte order. IPv6: IP6T_SO_ORIGINAL_DST = 80
at SOL_IPV6, a struct sockaddr_in6 (port 2-3, address 8-23).
"""
import json
import socket
import struct
import sys

SO_ORIGINAL_DST = 80
SOL_IPV6 = 41


def fmt(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def original_dst(conn, family):
    if family == socket.AF_INET6:
        raw = conn.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack("!H", raw[2:4])[0]
        return fmt((socket.inet_ntop(socket.AF_INET6, raw[8:24]), port))
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return fmt((socket.inet_ntoa(raw[4:8]), port))


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    host = sys.argv[1]
    port = int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    reply = sys.argv[4] if len(sys.argv) > 4 else "origdst-ok\n"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    srv.bind((host, port))
    srv.listen(1)
    print(f"LISTENING {fmt(srv.getsockname())}", file=sys.stderr, flush=True)

    srv.settimeout(timeout)
    try:
        conn, peer = srv.accept()
    except socket.timeout:
        print(json.dumps({"error": "timeout"}), flush=True)
        sys.exit(2)

    out = {"peer": fmt(peer), "local": fmt(conn.getsockname())}
    try:
        out["original_dst"] = original_dst(conn, family)
    except OSError as e:
        out["original_dst"] = None
        out["original_dst_error"] = str(e)

    conn.settimeout(1.0)
    data = b""
    try:
        while b"\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, OSError):
        pass
    out["received"] = data.decode("utf-8", "replace")
    try:
        conn.sendall(reply.encode())
    except OSError:
        pass
    conn.close()
    srv.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
