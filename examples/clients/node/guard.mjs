// Guard a call with the Atrion sidecar: decide, call, report by ticket (built-in fetch only).
//
//     ATRION_URL=http://127.0.0.1:7878 node guard.mjs "GET /users"
const ATRION = process.env.ATRION_URL ?? "http://127.0.0.1:7878";

async function post(path, body) {
  const r = await fetch(ATRION + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return r.json();
}

export async function guarded(route, call) {
  const d = await post("/v1/decide", { route });
  if (d.verdict === "shed") return ["shed", d.retry_after_ms];
  let ok = true;
  try {
    return ["done", await call()];
  } catch (e) {
    ok = false;
    throw e;
  } finally {
    await post("/v1/report", { ticket: d.ticket, ok });
  }
}

const result = await guarded(process.argv[2], async () => { await new Promise((r) => setTimeout(r, 10)); return "called"; });
console.log(JSON.stringify(result));
