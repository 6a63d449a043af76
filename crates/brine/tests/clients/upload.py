"""Uploads a body of SIZE MiB with Python's http.client, which writes the whole body before it
reads the answer (as many scripts do), and prints what it got as one JSON line:
{"status": 401, "body": "..."} or {"error": "BrokenPipeError: ..."}.

usage: upload.py URL SIZE_MIB [--source IP] [--header 'Name: value']...
"""

import argparse
import http.client
import json
import urllib.parse

CHUNK = 64 * 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("size_mib", type=int)
    p.add_argument("--source", default=None)
    p.add_argument("--header", action="append", default=[])
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.url)
    size = a.size_mib * 1024 * 1024
    headers = {"Content-Type": "application/json", "Content-Length": str(size)}
    for h in a.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()

    def body():
        sent = 0
        block = b" " * CHUNK
        while sent < size:
            n = min(CHUNK, size - sent)
            yield block[:n]
            sent += n

    src = (a.source, 0) if a.source else None
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120, source_address=src)
    try:
        conn.request("POST", u.path or "/", body=body(), headers=headers)
        r = conn.getresponse()
        out = {"status": r.status, "body": r.read().decode("utf-8", "replace")}
    except Exception as e:  # noqa: BLE001 - what the client saw is the result
        out = {"error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
