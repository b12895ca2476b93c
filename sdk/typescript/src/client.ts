import { GantryError, ProblemError, WaitTimeout } from "./errors.js";
import { SseParser } from "./sse.js";
import {
  FINAL_EVENTS,
  FINAL_STATUSES,
  type Export,
  type Job,
  type JobFilter,
  type JobPage,
  type JobRequest,
  type ServerEvent,
  type Submitted,
  type Webhook,
} from "./types.js";

export interface ClientOptions {
  /** A `429` is retried this many times, each after its `Retry-After` (default 3). */
  maxRetries?: number;
  /** Per-request timeout, ms (default 30 s; event streams have none). */
  timeoutMs?: number;
  /** Another `fetch` (tests, proxies). */
  fetch?: typeof fetch;
}

export interface EventsOptions {
  jobs?: string[];
  types?: string[];
  /** Resume after this event id. */
  lastEventId?: string;
  /** Reconnect (resuming) when the connection drops; default true. */
  reconnect?: boolean;
  signal?: AbortSignal;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seg = encodeURIComponent;

/** Gantry's scheduler API. */
export class Client {
  readonly baseUrl: string;
  private readonly auth: string;
  private readonly maxRetries: number;
  private readonly timeoutMs: number;
  private readonly fetch: typeof fetch;

  constructor(baseUrl: string, apiKey: string, opts: ClientOptions = {}) {
    const base = baseUrl.replace(/\/+$/, "");
    if (!/^https?:\/\//.test(base)) throw new GantryError(`not an http(s) URL: ${baseUrl}`);
    this.baseUrl = base;
    this.auth = `Bearer ${apiKey}`;
    this.maxRetries = opts.maxRetries ?? 3;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  }

  private async problem(resp: Response): Promise<ProblemError> {
    const text = await resp.text();
    let body: Record<string, unknown>;
    try {
      const v: unknown = JSON.parse(text);
      body = v && typeof v === "object" ? (v as Record<string, unknown>) : { code: "unexpected", detail: text };
    } catch {
      body = { code: "unexpected", detail: text.slice(0, 200) };
    }
    const ra = resp.headers.get("retry-after");
    const retryAfter = ra !== null && ra.trim() !== "" && !Number.isNaN(Number(ra)) ? Number(ra) : undefined;
    return new ProblemError(resp.status, body, retryAfter);
  }

  private async send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const h: Record<string, string> = { authorization: this.auth, ...headers };
      if (body !== undefined) h["content-type"] = "application/json";
      const resp = await this.fetch(`${this.baseUrl}${path}`, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      if (resp.ok) return resp;
      const err = await this.problem(resp);
      if (resp.status === 429 && attempt < this.maxRetries) {
        await sleep((err.retryAfter ?? 1) * 1000);
        continue;
      }
      throw err;
    }
  }

  private async json<T>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
    return (await (await this.send(method, path, body, headers)).json()) as T;
  }

  /** Submits one job; with `idempotencyKey`, a repeat returns the first job (`duplicate`). */
  submit(job: JobRequest, opts: { idempotencyKey?: string } = {}): Promise<Submitted> {
    const h: Record<string, string> = opts.idempotencyKey ? { "idempotency-key": opts.idempotencyKey } : {};
    return this.json("POST", "/v1/jobs", job, h);
  }

  /** Submits a batch: all admitted, or none. */
  async submitBatch(jobs: JobRequest[]): Promise<Submitted[]> {
    return (await this.json<{ jobs: Submitted[] }>("POST", "/v1/jobs:batch", { jobs })).jobs;
  }

  get(id: string): Promise<Job> {
    return this.json("GET", `/v1/jobs/${seg(id)}`);
  }

  /** One page of the tenant's own jobs, newest first, filtered; pass a page's `next_cursor`
   * as `cursor` (with the same filters) for the next. */
  listJobs(filter: JobFilter = {}): Promise<JobPage> {
    const q = new URLSearchParams();
    const put = (k: string, v: string | number | undefined) => {
      if (v !== undefined) q.set(k, String(v));
    };
    put("status", filter.status);
    put("kind", filter.kind);
    put("user", filter.user);
    put("pipeline", filter.pipeline);
    put("created_after", filter.createdAfterMs);
    put("created_before", filter.createdBeforeMs);
    put("limit", filter.limit);
    put("cursor", filter.cursor);
    const qs = q.toString();
    return this.json("GET", qs ? `/v1/jobs?${qs}` : "/v1/jobs");
  }

  /** Every job the filter selects, newest first, page after page. */
  async *iterJobs(filter: JobFilter = {}): AsyncGenerator<Job> {
    let cursor = filter.cursor;
    for (;;) {
      const page = await this.listJobs({ ...filter, cursor });
      yield* page.jobs;
      if (page.next_cursor === null) return;
      cursor = page.next_cursor;
    }
  }

  /** `cancelled` (it was waiting) or `cancel_requested` (running: it stops at its next
   * heartbeat). */
  async cancel(id: string): Promise<string> {
    return (await this.json<{ outcome: string }>("POST", `/v1/jobs/${seg(id)}:cancel`)).outcome;
  }

  async balance(): Promise<number> {
    return (await this.json<{ balance: number }>("GET", "/v1/credits")).balance;
  }

  /** One of a job's released outputs (its main one when `name` is not given). */
  async download(id: string, name?: string): Promise<Uint8Array> {
    let file = name;
    if (file === undefined) {
      const key = (await this.get(id)).result?.object_key;
      if (!key) throw new GantryError(`job ${id} has no output`);
      file = key.split("/").pop() as string;
    }
    const resp = await this.send("GET", `/v1/jobs/${seg(id)}/outputs/${seg(file)}`);
    return new Uint8Array(await resp.arrayBuffer());
  }

  private async *stream(path: string, lastEventId?: string, signal?: AbortSignal): AsyncGenerator<ServerEvent> {
    const headers: Record<string, string> = { authorization: this.auth, accept: "text/event-stream" };
    if (lastEventId) headers["last-event-id"] = lastEventId;
    const resp = await this.fetch(`${this.baseUrl}${path}`, { headers, signal });
    if (!resp.ok) throw await this.problem(resp);
    if (!resp.body) throw new GantryError("the event stream has no body");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        for (const ev of parser.push(value)) yield ev;
      }
    } finally {
      await reader.cancel().catch(() => undefined);
    }
  }

  /** The tenant's job events as they happen (`GET /v1/events`); each event's `id` resumes
   * after it. A dropped connection is resumed where it stopped unless `reconnect: false`. */
  async *events(opts: EventsOptions = {}): AsyncGenerator<ServerEvent> {
    const q = new URLSearchParams();
    if (opts.jobs?.length) q.set("job", opts.jobs.join(","));
    if (opts.types?.length) q.set("type", opts.types.join(","));
    const path = `/v1/events${q.size ? `?${q}` : ""}`;
    let last = opts.lastEventId;
    for (;;) {
      try {
        for await (const ev of this.stream(path, last, opts.signal)) {
          if (ev.id) last = ev.id;
          yield ev;
        }
        return;
      } catch (e) {
        if (e instanceof ProblemError || opts.reconnect === false || opts.signal?.aborted) throw e;
        await sleep(1000);
      }
    }
  }

  /** One job's events from its enqueue; ends after its final one. */
  jobEvents(id: string, signal?: AbortSignal): AsyncGenerator<ServerEvent> {
    return this.stream(`/v1/jobs/${seg(id)}/events`, undefined, signal);
  }

  /** Waits for a job to finish over its event stream, polling only if that fails. */
  async wait(id: string, opts: { timeoutMs?: number } = {}): Promise<Job> {
    const timeoutMs = opts.timeoutMs ?? 300_000;
    const deadline = Date.now() + timeoutMs;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      for await (const ev of this.jobEvents(id, abort.signal)) {
        if (FINAL_EVENTS.has(ev.event)) return await this.get(id);
      }
    } catch (e) {
      if (e instanceof ProblemError && e.status === 404) throw e;
    } finally {
      clearTimeout(timer);
    }
    let pause = 500;
    let job = await this.get(id);
    while (!FINAL_STATUSES.has(job.status)) {
      if (Date.now() > deadline) throw new WaitTimeout(id, timeoutMs, job.status);
      await sleep(pause);
      pause = Math.min(pause * 2, 5000);
      job = await this.get(id);
    }
    return job;
  }

  /** Registers a webhook endpoint; keep the returned `secret` (shown once). */
  createWebhook(url: string, types: string[] = [], description?: string): Promise<Webhook> {
    return this.json("POST", "/v1/webhooks", description ? { url, types, description } : { url, types });
  }

  async webhooks(): Promise<Webhook[]> {
    return (await this.json<{ webhooks: Webhook[] }>("GET", "/v1/webhooks")).webhooks;
  }

  async deleteWebhook(id: string): Promise<void> {
    await this.send("DELETE", `/v1/webhooks/${seg(id)}`);
  }

  /** A new secret; the old one keeps signing beside it for a day. */
  async rotateWebhookSecret(id: string): Promise<string> {
    return (await this.json<{ secret: string }>("POST", `/v1/webhooks/${seg(id)}/rotate`)).secret;
  }

  async webhookDeliveries(id: string): Promise<Array<Record<string, unknown>>> {
    return (await this.json<{ deliveries: Array<Record<string, unknown>> }>("GET", `/v1/webhooks/${seg(id)}/deliveries`)).deliveries;
  }

  private userPath(user: string, tail: string, tenant?: string): string {
    const q = tenant === undefined ? "" : `?tenant=${seg(tenant)}`;
    return `/v1/users/${seg(user)}${tail}${q}`;
  }

  /** Starts an export of `user`'s data (an operator key names the `tenant`). */
  exportUser(user: string, opts: { tenant?: string } = {}): Promise<Export> {
    return this.json<Export>("POST", this.userPath(user, "/exports", opts.tenant));
  }

  getExport(user: string, id: string, opts: { tenant?: string } = {}): Promise<Export> {
    return this.json<Export>("GET", this.userPath(user, `/exports/${seg(id)}`, opts.tenant));
  }

  /** Polls an export until it ends; throws `WaitTimeout`. */
  async waitExport(user: string, id: string, opts: { tenant?: string; timeoutMs?: number } = {}): Promise<Export> {
    const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
    let pause = 200;
    let e = await this.getExport(user, id, opts);
    while (!FINAL_STATUSES.has(e.status)) {
      if (Date.now() > deadline) throw new WaitTimeout(id, opts.timeoutMs ?? 600_000, e.status);
      await sleep(pause);
      pause = Math.min(pause * 2, 5_000);
      e = await this.getExport(user, id, opts);
    }
    return e;
  }

  /** A made export's archive, as a stream of bytes (compare `archive.sha256`). */
  async downloadExport(e: Export): Promise<ReadableStream<Uint8Array>> {
    if (!e.archive) throw new GantryError(`export ${e.id} has no archive: it is ${e.status}`);
    const resp = await this.send("GET", e.archive.download);
    if (!resp.body) throw new GantryError("the archive's answer has no body");
    return resp.body;
  }

  /** Erases `user`'s data; the receipt (`complete` false: call again). */
  eraseUser(user: string, opts: { tenant?: string } = {}): Promise<Record<string, unknown>> {
    return this.json<Record<string, unknown>>("DELETE", this.userPath(user, "/data", opts.tenant));
  }
}
