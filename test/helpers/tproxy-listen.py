#!/usr/bin/python3
"""Accept ONE TCP connection on a transparent (IP_TRANSPARENT) socket, as Envoy's TPROXY inbound
listener does, and print {"local": "ip:port", "peer": "ip:port"} as one JSON line: under TPROXY the
local address is the client's original destination.

usage: tproxy-listen.py PORT [TIMEOUT_SECONDS]; prints "LISTENING" on stderr once bound.
"""
import json
import socket
import sys

IP_TRANSPARENT = 19

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
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
print(json.dumps({"local": f"{local[0]}:{local[1]}", "peer": f"{peer[0]}:{peer[1]}"}), flush=True)
