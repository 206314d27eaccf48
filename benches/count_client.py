#!/usr/bin/env python3
"""Sends exactly N requests over one keep-alive connection (load.sh's COUNT mode).

Usage: count_client.py URL N FILE MODE [HEADER]
  MODE one:      the first line of FILE on every request
  MODE cycle:    line 1, 2, ... (wrapping), one per request; cycle@K starts after line K
A line is sent as `Authorization: Bearer <line>`, or as HEADER's whole value.
Prints `BENCH requests=N non2xx=M` (the form load.sh's bench_line reads).
"""
import http.client
import sys
import urllib.parse


def main() -> int:
    url, n, path, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    header = sys.argv[5] if len(sys.argv) > 5 else None
    with open(path) as f:
        lines = [l.strip() for l in f if l.strip()]
    start = 0
    if mode == "cycle":
        pass
    elif mode.startswith("cycle@"):
        start = int(mode.split("@", 1)[1])
    elif mode == "one":
        lines = lines[:1]
    else:
        print(f"unknown MODE {mode}", file=sys.stderr)
        return 2
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    non2xx = 0
    for i in range(n):
        line = lines[(start + i) % len(lines)]
        value = line if header else f"Bearer {line}"
        conn.request("GET", u.path or "/", headers={header or "Authorization": value})
        resp = conn.getresponse()
        resp.read()
        if not 200 <= resp.status < 300:
            non2xx += 1
    conn.close()
    print(f"BENCH requests={n} duration_us=0 p50_us=0 p99_us=0 non2xx={non2xx} sockerr=0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
