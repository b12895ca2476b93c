export { Client, type ClientOptions, type EventsOptions } from "./client.js";
export { GantryError, ProblemError, WaitTimeout, WebhookVerificationError } from "./errors.js";
export { SseParser } from "./sse.js";
export {
  eventJobId,
  type Export,
  type ExportArchive,
  type Job,
  type JobEventPayload,
  type JobFilter,
  type JobPage,
  type JobRequest,
  type ResultRef,
  type ServerEvent,
  type Submitted,
  type Webhook,
} from "./types.js";
export { sign, verifyWebhook } from "./webhooks.js";
