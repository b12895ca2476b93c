/** Anything the client could not do. */
export class GantryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GantryError";
  }
}

/** The API answered with an RFC 7807 problem document; `code` is stable. */
export class ProblemError extends GantryError {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly problem: Record<string, unknown>;
  /** Seconds to wait before trying again (from `Retry-After`), when the API said. */
  readonly retryAfter: number | undefined;

  constructor(status: number, problem: Record<string, unknown>, retryAfter?: number) {
    const code = String(problem["code"] ?? "unknown");
    const detail = String(problem["detail"] ?? problem["title"] ?? "");
    super(`${status} ${code}: ${detail}`);
    this.name = status === 429 ? "RateLimited" : "ProblemError";
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

/** A job did not finish in the time given. */
export class WaitTimeout extends GantryError {
  constructor(readonly jobId: string, readonly timeoutMs: number, readonly status: string) {
    super(`job ${jobId} not finished after ${Math.round(timeoutMs / 1000)} s (last status ${status})`);
    this.name = "WaitTimeout";
  }
}

/** A webhook delivery whose signature or timestamp does not verify. */
export class WebhookVerificationError extends GantryError {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}
