import { WebhookVerificationError } from "./errors.js";
import type { JobEventPayload } from "./types.js";

/** Standard Webhooks signatures: HMAC-SHA256 over `"{id}.{timestamp}.{body}"` keyed with the
 * endpoint's `whsec_` secret, base64, sent as `v1,<signature>` (several while rotating). */

const PREFIX = "whsec_";
const encoder = new TextEncoder();

async function subtle(): Promise<SubtleCrypto> {
  if (globalThis.crypto?.subtle) return globalThis.crypto.subtle;
  // Node 18 without the global (a computed name, so bundlers for browsers leave it alone)
  const name = "node:crypto";
  const nodeCrypto = (await import(/* @vite-ignore */ name)) as { webcrypto: Crypto };
  return nodeCrypto.webcrypto.subtle;
}

function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** The `v1,<base64>` signature of `body` sent as `id` at `timestamp` (Unix seconds). */
export async function sign(secret: string, id: string, timestamp: number, body: string): Promise<string> {
  if (!secret.startsWith(PREFIX)) throw new WebhookVerificationError("a signing secret starts with whsec_");
  let key: Uint8Array;
  try {
    key = fromBase64(secret.slice(PREFIX.length));
  } catch {
    throw new WebhookVerificationError("the signing secret is not base64");
  }
  const s = await subtle();
  const k = await s.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await s.sign("HMAC", k, encoder.encode(`${id}.${timestamp}.${body}`));
  return `v1,${toBase64(new Uint8Array(mac))}`;
}

function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

type HeaderBag = Headers | Record<string, string | string[] | undefined>;

function header(h: HeaderBag, name: string): string | undefined {
  if (typeof (h as Headers).get === "function") return (h as Headers).get(name) ?? undefined;
  for (const [k, v] of Object.entries(h as Record<string, string | string[] | undefined>)) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
}

/** Checks a delivery (the body exactly as received) and returns its payload; throws
 * `WebhookVerificationError` when no signature is the secret's or the timestamp is more than
 * `toleranceSecs` from now. */
export async function verifyWebhook(
  secret: string,
  headers: HeaderBag,
  body: string,
  toleranceSecs = 300,
  nowSecs = Date.now() / 1000,
): Promise<JobEventPayload> {
  const id = header(headers, "webhook-id");
  const ts = header(headers, "webhook-timestamp");
  const sigs = header(headers, "webhook-signature");
  if (!id || !ts || !sigs) throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature");
  const t = Number(ts);
  if (!Number.isInteger(t)) throw new WebhookVerificationError("webhook-timestamp is not a number");
  if (Math.abs(nowSecs - t) > toleranceSecs) throw new WebhookVerificationError("webhook-timestamp is too far from now");
  const want = await sign(secret, id, t, body);
  if (!sigs.split(" ").some((s) => constantTimeEqual(s, want))) {
    throw new WebhookVerificationError("no signature matches the secret");
  }
  return JSON.parse(body) as JobEventPayload;
}
