/** A job request as `POST /v1/jobs` takes it (see the scheduler's `/openapi.json`). */
export interface JobRequest {
  user: string;
  kind: "generate" | "upscale" | "transcode" | "csam_hash" | "noop";
  payload: Record<string, unknown>;
  priority?: "high" | "normal" | "bulk";
  allowed_regions?: string[];
  max_attempts?: number;
  timeout_secs?: number;
  delay_ms?: number;
  [extra: string]: unknown;
}

/** A job the scheduler admitted. */
export interface Submitted {
  id: string;
  pool: string;
  credits_reserved: number;
  duplicate: boolean;
  provider?: string;
  model?: string;
}

/** Where a job's output is. */
export interface ResultRef {
  object_key: string;
  size_bytes: number;
  content_type: string;
  sha256: string;
  details?: Record<string, string>;
}

/** A job as `GET /v1/jobs/{id}` shows it. */
export interface Job {
  id: string;
  kind: string;
  status: "waiting" | "queued" | "delayed" | "running" | "retry_scheduled" | "succeeded" | "dead" | "cancelled" | "blocked" | "review";
  attempts: number;
  pool: string;
  result?: ResultRef | null;
  error?: { class: string; message: string; at_ms?: number } | null;
  usage?: Record<string, unknown> | null;
  credits?: { state: string; reserved: number; charged: number } | null;
  provider?: string | null;
  model?: string | null;
  [extra: string]: unknown;
}

/** What `Client.listJobs` selects, and which page. */
export interface JobFilter {
  status?: Job["status"];
  kind?: string;
  /** Only this user's jobs (the user id they were submitted with). */
  user?: string;
  /** Only this pipeline's steps. */
  pipeline?: string;
  /** Created at or after (Unix ms). */
  createdAfterMs?: number;
  /** Created before (Unix ms). */
  createdBeforeMs?: number;
  /** At most this many (1..200; the server's default is 50). */
  limit?: number;
  /** A previous page's `next_cursor`, with the same filters. */
  cursor?: string;
}

/** A page of `GET /v1/jobs`, newest first. A page may hold fewer jobs than asked (even none)
 * and still have a `next_cursor`: the server reads a bounded stretch of its index per page. */
export interface JobPage {
  jobs: Job[];
  next_cursor: string | null;
}

/** The JSON of one job event (SSE data, and a webhook's body). */
export interface JobEventPayload {
  type: "job.succeeded" | "job.failed" | "job.dead" | "job.blocked" | "job.cancelled";
  timestamp: string;
  data: {
    job_id: string;
    kind?: string;
    pool: string;
    status: string;
    result?: ResultRef;
    output_url?: string;
    error?: { class: string; message: string };
  };
}

/** One Server-Sent Event. */
export interface ServerEvent {
  /** `job.succeeded`, … or `gap` (retention dropped events a resuming client missed). */
  event: string;
  /** The cursor to resume after it. */
  id?: string;
  data: string;
}

/** A registered webhook endpoint; `secret` only right after registration. */
export interface Webhook {
  id: string;
  url: string;
  types: string[];
  secret?: string;
  disabled?: { at: string; reason: string };
  [extra: string]: unknown;
}

export const FINAL_STATUSES = new Set(["succeeded", "dead", "cancelled", "blocked"]);
export const FINAL_EVENTS = new Set(["job.succeeded", "job.dead", "job.blocked", "job.cancelled"]);

/** The job id an event is about. */
export function eventJobId(e: ServerEvent): string | undefined {
  try {
    return (JSON.parse(e.data) as JobEventPayload).data?.job_id;
  } catch {
    return undefined;
  }
}

/** A made export's archive. */
export interface ExportArchive {
  /** Its download route (GET, the tenant's key). */
  download: string;
  size_bytes: number;
  sha256: string;
  /** jobs, pipelines, outputs, references and files in it. */
  counts: Record<string, number>;
  /** When it is deleted (Unix ms). */
  expires_at_ms: number;
}

/** An export of a user's data (`POST /v1/users/{user_id}/exports`). */
export interface Export {
  id: string;
  status: string;
  created_at_ms: number;
  finished_at_ms?: number;
  /** Percent of the user's index read, while it runs. */
  progress?: number;
  /** What it includes beyond the user's jobs and pipelines (the tenant's policy). */
  includes: { trust: boolean; moderation: boolean };
  archive?: ExportArchive;
  error?: string;
}
