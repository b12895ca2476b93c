import type { ServerEvent } from "./types.js";

/** Splits a text stream into Server-Sent Events; comments (keep-alives) are dropped. */
export class SseParser {
  private buf = "";
  lastId: string | undefined;

  /** Adds a chunk; returns the events it completed. */
  push(chunk: string): ServerEvent[] {
    this.buf += chunk.replace(/\r\n/g, "\n");
    const out: ServerEvent[] = [];
    let end: number;
    while ((end = this.buf.indexOf("\n\n")) >= 0) {
      const block = this.buf.slice(0, end);
      this.buf = this.buf.slice(end + 2);
      let event = "message";
      let id: string | undefined;
      const data: string[] = [];
      let any = false;
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const key = i < 0 ? line : line.slice(0, i);
        let value = i < 0 ? "" : line.slice(i + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        any = true;
        if (key === "event") event = value;
        else if (key === "id") id = value;
        else if (key === "data") data.push(value);
      }
      if (any) {
        if (id !== undefined) this.lastId = id;
        out.push(id === undefined ? { event, data: data.join("\n") } : { event, id, data: data.join("\n") });
      }
    }
    return out;
  }
}
