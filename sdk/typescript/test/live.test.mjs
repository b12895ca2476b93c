// The client against a live scheduler, workers and mock providers (tests/e2e/sdk.rs starts
// them and sets GANTRY_URL and GANTRY_WEBHOOK_PORT).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer } from "node:http";

import { Client, ProblemError, eventJobId, verifyWebhook } from "../dist/index.js";

const URL_ = process.env.GANTRY_URL;
const HOOK_PORT = process.env.GANTRY_WEBHOOK_PORT;
const live = { skip: URL_ ? false : "GANTRY_URL is not set: no live scheduler" };
const STUDIO = "demo-studio-key";
const VIDEO = "demo-video-key";

const noop = (payload = {}, extra = {}) => ({ user: "u-sdk-ts", kind: "noop", payload, ...extra });
const generate = (prompt) => ({
  user: "u-sdk-ts",
  kind: "generate",
  allowed_regions: ["US"],
  payload: { provider: "openai", model: "gpt-image-1", prompt },
});

test("submit, wait over SSE and download", live, async () => {
  const gantry = new Client(URL_, STUDIO);
  const job = await gantry.submit(generate("a blue door in the rain"));
  assert.equal(job.provider, "openai");
  const done = await gantry.wait(job.id, { timeoutMs: 120_000 });
  assert.equal(done.status, "succeeded");
  const png = await gantry.download(done.id);
  assert.deepEqual([...png.slice(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
  assert.equal(createHash("sha256").update(png).digest("hex"), done.result.sha256);
});

test("batches and idempotency keys", live, async () => {
  const gantry = new Client(URL_, STUDIO);
  const batch = await gantry.submitBatch([noop(), noop(), noop()]);
  assert.equal(new Set(batch.map((s) => s.id)).size, 3);
  const first = await gantry.submit(noop(), { idempotencyKey: "order-ts-1" });
  const again = await gantry.submit(noop(), { idempotencyKey: "order-ts-1" });
  assert.deepEqual([again.id, again.duplicate], [first.id, true]);
  for (const s of batch) assert.equal((await gantry.wait(s.id, { timeoutMs: 60_000 })).status, "succeeded");
});

test("jobs are searched newest first, a page at a time", live, async () => {
  const gantry = new Client(URL_, STUDIO);
  const mine = [];
  for (let i = 0; i < 3; i++) mine.push(await gantry.submit({ ...noop(), user: "u-search-ts" }));
  const page = await gantry.listJobs({ user: "u-search-ts", limit: 2 });
  assert.deepEqual(page.jobs.map((j) => j.id), [mine[2].id, mine[1].id]);
  assert.ok(page.next_cursor);
  const all = [];
  for await (const j of gantry.iterJobs({ user: "u-search-ts", kind: "noop", limit: 1 })) all.push(j.id);
  assert.deepEqual(all, mine.map((m) => m.id).reverse());
  await assert.rejects(
    gantry.listJobs({ user: "u-search-ts", kind: "upscale", cursor: page.next_cursor }),
    (e) => e instanceof ProblemError && e.status === 404 && e.code === "unknown_cursor",
  );
});

test("cancel a running job", live, async () => {
  const gantry = new Client(URL_, STUDIO);
  const job = await gantry.submit(noop({ sleep_ms: 60_000 }));
  const deadline = Date.now() + 30_000;
  while ((await gantry.get(job.id)).status !== "running" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(["cancelled", "cancel_requested"].includes(await gantry.cancel(job.id)));
  assert.equal((await gantry.wait(job.id, { timeoutMs: 60_000 })).status, "cancelled");
});

test("refusals are typed problems", live, async () => {
  const gantry = new Client(URL_, STUDIO);
  await assert.rejects(gantry.submit({ user: "u", kind: "paint", payload: {} }), (e) => e instanceof ProblemError && e.status === 400);
  await assert.rejects(gantry.get("01ARZ3NDEKTSV4RRFFQ69G5FAV"), (e) => e instanceof ProblemError && e.code === "not_found");
  await assert.rejects(new Client(URL_, "not-a-key").balance(), (e) => e instanceof ProblemError && e.status === 401);
});

test("rate limits are retried after Retry-After", live, async () => {
  const impatient = new Client(URL_, VIDEO, { maxRetries: 0 });
  // The first batch spends the burst (100); a second at once would need 5 s of refill.
  await impatient.submitBatch(Array.from({ length: 100 }, () => noop()));
  await assert.rejects(
    impatient.submitBatch(Array.from({ length: 100 }, () => noop())),
    (e) => e instanceof ProblemError && e.status === 429 && e.retryAfter !== undefined,
  );
  const patient = new Client(URL_, VIDEO, { maxRetries: 5 });
  for (let i = 0; i < 5; i++) await patient.submit(noop());
});

test("events iterate as jobs finish, and resume after an id", live, async () => {
  const gantry = new Client(URL_, STUDIO);
  const abort = new AbortController();
  const seen = [];
  const types = ["job.succeeded", "job.dead"];
  const follow = (async () => {
    for await (const ev of gantry.events({ types, signal: abort.signal })) {
      seen.push(ev);
      if (seen.length >= 2) return;
    }
  })();
  await new Promise((r) => setTimeout(r, 1000));
  const ok = await gantry.submit(noop());
  const bad = await gantry.submit(noop({ fail_attempts: 1, fail_class: "permanent" }, { max_attempts: 1 }));
  let timer;
  await Promise.race([follow, new Promise((_, no) => (timer = setTimeout(() => no(new Error("no events")), 60_000)))]);
  clearTimeout(timer);
  abort.abort();
  const got = new Set(seen.map((e) => `${eventJobId(e)} ${e.event}`));
  assert.ok(got.has(`${ok.id} job.succeeded`) && got.has(`${bad.id} job.dead`), JSON.stringify(seen));
  const rest = [];
  const again = new AbortController();
  for await (const ev of gantry.events({ types, lastEventId: seen[0].id, signal: again.signal })) {
    rest.push(ev);
    if (rest.length === seen.length - 1) break;
  }
  again.abort();
  assert.deepEqual(rest.map((e) => e.data), seen.slice(1).map((e) => e.data));
});

test("webhooks arrive signed and verify", { skip: URL_ && HOOK_PORT ? false : "no live scheduler or webhook port" }, async () => {
  const received = [];
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  await new Promise((r) => server.listen(Number(HOOK_PORT), "127.0.0.1", r));
  try {
    const gantry = new Client(URL_, STUDIO);
    const hook = await gantry.createWebhook(`http://127.0.0.1:${HOOK_PORT}/hooks`, ["job.succeeded"]);
    assert.ok(hook.secret?.startsWith("whsec_"));
    const job = await gantry.submit(noop());
    await gantry.wait(job.id, { timeoutMs: 60_000 });
    const deadline = Date.now() + 30_000;
    let mine;
    while (!mine && Date.now() < deadline) {
      mine = received.find((r) => JSON.parse(r.body).data.job_id === job.id);
      if (!mine) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(mine, "the delivery arrived");
    const payload = await verifyWebhook(hook.secret, mine.headers, mine.body);
    assert.equal(payload.type, "job.succeeded");
    const log = await gantry.webhookDeliveries(hook.id);
    assert.ok(log.some((d) => d.job_id === job.id && d.status === "delivered"));
    await gantry.deleteWebhook(hook.id);
    assert.ok(!(await gantry.webhooks()).some((w) => w.id === hook.id));
  } finally {
    server.close();
  }
});

test("a user's data is exported, downloaded and erased", live, async () => {
  const gantry = new Client(URL_, STUDIO);
  const job = await gantry.submit({ ...generate("a green lantern"), user: "u-ts-export" });
  assert.equal((await gantry.wait(job.id, { timeoutMs: 120_000 })).status, "succeeded");
  const started = await gantry.exportUser("u-ts-export");
  assert.deepEqual(started.includes, { trust: true, moderation: false });
  const done = await gantry.waitExport("u-ts-export", started.id, { timeoutMs: 120_000 });
  assert.equal(done.status, "succeeded");
  assert.equal(done.archive.counts.jobs, 1);
  const chunks = [];
  for await (const c of await gantry.downloadExport(done)) chunks.push(c);
  const tar = Buffer.concat(chunks);
  assert.equal(tar.length, done.archive.size_bytes);
  assert.equal(createHash("sha256").update(tar).digest("hex"), done.archive.sha256);
  // The job's record is in it (a ustar entry name at the start of a 512-byte header).
  assert.ok(tar.includes(Buffer.from(`jobs/${job.id}/job.json`)));
  const other = new Client(URL_, VIDEO);
  await assert.rejects(other.getExport("u-ts-export", done.id), (e) => e instanceof ProblemError && e.status === 404);
  const receipt = await gantry.eraseUser("u-ts-export");
  assert.equal(receipt.complete, true);
  await assert.rejects(gantry.getExport("u-ts-export", done.id), (e) => e instanceof ProblemError && e.status === 404);
});
