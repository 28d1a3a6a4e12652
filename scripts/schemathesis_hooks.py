"""Schemathesis hooks for the sidecar's API (loaded by scripts/schemathesis.sh).

`POST /v1/admin/restore` takes JSON lines (`application/x-ndjson`), a media type
schemathesis has no serializer for: a generated string is sent as its UTF-8 bytes, any
other generated value as one JSON line.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return (json.dumps(value) + "\n").encode()
