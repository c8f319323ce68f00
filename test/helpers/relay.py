#!/usr/bin/python3
"""A process in the pod that pretends to be the capture: it listens where validate's probe dials and
relays each connection to validate's own listener. Prints "relaying" on stderr once listening.

  relay.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT [same-port]

With same-port it connects from the probe's own source address and port (SO_REUSEADDR), so that
the relayed connection looks like the probe's.
"""
import socket
import sys
import threading


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    listen_host, listen_port, target_host, target_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    same_port = len(sys.argv) > 5 and sys.argv[5] == 'same-port'
    family = socket.AF_INET6 if ':' in listen_host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((listen_host, listen_port))
    server.listen(16)
    sys.stderr.write('relaying\n')
    sys.stderr.flush()
    while True:
        conn, peer = server.accept()
        out = socket.socket(family, socket.SOCK_STREAM)
        if same_port:
            out.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                out.bind(peer[:2])
            except OSError as err:
                sys.stderr.write(f'cannot bind {peer}: {err}\n')
                sys.stderr.flush()
        try:
            out.connect((target_host, target_port))
        except OSError as err:
            sys.stderr.write(f'cannot connect: {err}\n')
            conn.close()
            continue
        threading.Thread(target=pipe, args=(conn, out), daemon=True).start()
        threading.Thread(target=pipe, args=(out, conn), daemon=True).start()


if __name__ == '__main__':
    main()
