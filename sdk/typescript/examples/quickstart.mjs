import { writeFile } from "node:fs/promises";
import { Client } from "@gantry/client";

const gantry = new Client(process.env.GANTRY_URL ?? "http://127.0.0.1:8080", process.env.GANTRY_KEY ?? "demo-studio-key");
const job = await gantry.submit({ user: "user-1", kind: "generate", allowed_regions: ["US"],
  payload: { provider: "openai", model: "gpt-image-1", prompt: "a red kite over the sea" } });
const done = await gantry.wait(job.id); // follows the job's event stream; polls if it cannot
console.log(done.status, done.result?.object_key ?? JSON.stringify(done.error));
if (done.status === "succeeded") await writeFile("kite.png", await gantry.download(done.id));
