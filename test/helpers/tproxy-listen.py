#!/usr/bin/python3
"""Accept ONE TCP connection on a transparent (IP_TRANSPARENT) socket, as Envoy's TPROXY inbound
listener does, and print {"local": "ip:port", "peer": "ip:port"} as one JSON line: under TPROXY the
local address is the client's original destination.

usage: tproxy-listen.py PORT [TIMEOUT_SECONDS [BIND_ADDRESS]]; prints "LISTENING" on stderr once bound.
BIND_ADDRESS defaults to 0.0.0.0; "::" listens for IPv6 (IPV6_TRANSPARENT).
"""
import json
import socket
import sys

IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75

host = sys.argv[3] if len(sys.argv) > 3 else "0.0.0.0"
ipv6 = ":" in host
srv = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if ipv6:
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
else:
    srv.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
srv.bind((host, int(sys.argv[1])))
srv.listen(1)
srv.settimeout(float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)
print("LISTENING", file=sys.stderr, flush=True)
try:
    conn, peer = srv.accept()
except socket.timeout:
    print(json.dumps({"error": "timeout"}), flush=True)
    sys.exit(2)
local = conn.getsockname()
conn.sendall(b"tproxy-ok\n")
conn.close()
address = (lambda a: f"[{a[0]}]:{a[1]}" if ipv6 else f"{a[0]}:{a[1]}")
print(json.dumps({"local": address(local), "peer": address(peer)}), flush=True)
