#!/usr/bin/python3
"""Connect once to HOST:PORT and report the outcome as one JSON line on stdout.

usage: connect.py HOST PORT [TIMEOUT_SECONDS] [PAYLOAD] [BIND_ADDRESS]

{"connected": true, "local": "ip:port", "peer": "ip:port", "reply": "..."} or
{"connected": false, "error": "ConnectionRefusedError: ..."}. Always exits 0 unless the
arguments are wrong. Run it with nsenter --net=... [--setuid 1337 --setgid 1337].
"""
import json
import os
import socket
import sys


def fmt(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    host = sys.argv[1]
    port = int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    payload = sys.argv[4] if len(sys.argv) > 4 else "hello\n"
    bind = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out = {"connected": False, "uid": os.getuid(), "gid": os.getgid()}
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if bind:
            s.bind((bind, 0))
        s.connect((host, port))
        out["connected"] = True
        out["local"] = fmt(s.getsockname())
        out["peer"] = fmt(s.getpeername())
        if payload:
            s.sendall(payload.encode())
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, OSError):
            pass
        out["reply"] = data.decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001 - report any failure as data
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        s.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
