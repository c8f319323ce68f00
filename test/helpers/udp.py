#!/usr/bin/python3
"""One UDP datagram, for DNS-capture tests.

usage: udp.py listen PORT [TIMEOUT_SECONDS]  -> prints "LISTENING" on stderr, then the first datagram's
                                                payload on stdout (exit 2 on timeout)
       udp.py send HOST PORT PAYLOAD
"""
import socket
import sys

if sys.argv[1] == "listen":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[2])))
    s.settimeout(float(sys.argv[3]) if len(sys.argv) > 3 else 3.0)
    print("LISTENING", file=sys.stderr, flush=True)
    try:
        print(s.recvfrom(512)[0].decode(), flush=True)
    except socket.timeout:
        sys.exit(2)
else:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[4].encode(), (sys.argv[2], int(sys.argv[3])))
