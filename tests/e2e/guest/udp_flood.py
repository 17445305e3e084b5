#!/usr/bin/env python3
"""Sends SECONDS worth of small UDP datagrams to 127.0.0.1:PORT at about RATE a second (e2e step 13:
an nftables rule in this network namespace drops them)."""
import socket
import sys
import time

port, seconds, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.sendto(b"e2e", ("127.0.0.1", port))
    time.sleep(1 / rate)
