"""Guard a call with the Atrion sidecar: decide, call, report by ticket (standard library only).

    ATRION_URL=http://127.0.0.1:7878 python3 guard.py "GET /users"
"""
import json, os, sys, time, urllib.request

ATRION = os.environ.get("ATRION_URL", "http://127.0.0.1:7878")


def post(path, body):
    req = urllib.request.Request(ATRION + path, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=1) as r:
        return json.load(r)


def guarded(route, call):
    d = post("/v1/decide", {"route": route})
    if d["verdict"] == "shed":
        return ("shed", d["retry_after_ms"])
    ok = True
    try:
        return ("done", call())
    except Exception:
        ok = False
        raise
    finally:
        post("/v1/report", {"ticket": d["ticket"], "ok": ok})


if __name__ == "__main__":
    print(json.dumps(guarded(sys.argv[1], lambda: time.sleep(0.01) or "called")))
