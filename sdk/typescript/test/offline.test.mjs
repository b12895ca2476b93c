// What needs no server: signatures, the SSE parser.
import { test } from "node:test";
import assert from "node:assert/strict";

import { SseParser, WebhookVerificationError, sign, verifyWebhook } from "../dist/index.js";

const SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

test("signs the Standard Webhooks example", async () => {
  const sig = await sign(SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}');
  assert.equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
});

test("verify accepts ours and refuses the rest", async () => {
  const now = Math.floor(Date.now() / 1000);
  const body = '{"type":"job.succeeded","data":{"job_id":"J","pool":"cpu","status":"succeeded"}}';
  const good = await sign(SPEC_SECRET, "msg_1", now, body);
  const headers = { "Webhook-Id": "msg_1", "Webhook-Timestamp": String(now), "Webhook-Signature": `v1,AAAA ${good}` };
  assert.equal((await verifyWebhook(SPEC_SECRET, headers, body)).type, "job.succeeded");
  assert.equal((await verifyWebhook(SPEC_SECRET, new Headers(headers), body)).data.job_id, "J");
  await assert.rejects(verifyWebhook(SPEC_SECRET, headers, body + " "), WebhookVerificationError);
  await assert.rejects(verifyWebhook(SPEC_SECRET, { ...headers, "Webhook-Id": "msg_2" }, body), WebhookVerificationError);
  const stale = now - 3600;
  const old = { "webhook-id": "msg_1", "webhook-timestamp": String(stale), "webhook-signature": await sign(SPEC_SECRET, "msg_1", stale, body) };
  await assert.rejects(verifyWebhook(SPEC_SECRET, old, body), /too far/);
  await assert.rejects(verifyWebhook("nope", headers, body), WebhookVerificationError);
});

test("the SSE parser splits events across chunks and skips comments", () => {
  const p = new SseParser();
  const a = p.push(": keep-alive\n\nid: cpu=1-0\nevent: job.dead\ndata: {\"data\":");
  assert.deepEqual(a, []);
  const b = p.push("{\"job_id\":\"J\"}}\r\n\r\nevent: gap\ndata: a\ndata: b\n\nid: x");
  assert.equal(b.length, 2);
  assert.deepEqual(b[0], { event: "job.dead", id: "cpu=1-0", data: '{"data":{"job_id":"J"}}' });
  assert.deepEqual(b[1], { event: "gap", data: "a\nb" });
  assert.equal(p.lastId, "cpu=1-0");
});
