// A platform's webhook endpoint: verifies each delivery, answers at once, then acts on it.
//   GANTRY_WEBHOOK_SECRET=whsec_... node webhook_receiver.mjs 9000
import { createServer } from "node:http";
import { verifyWebhook } from "@gantry/client";

const secret = process.env.GANTRY_WEBHOOK_SECRET;
createServer((req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (c) => (body += c));
  req.on("end", async () => {
    try {
      const event = await verifyWebhook(secret, req.headers, body);
      res.writeHead(204).end();
      console.log(event.type, event.data.job_id, event.data.output_url ?? "");
    } catch (e) {
      res.writeHead(401).end();
      console.log("refused:", e.message);
    }
  });
}).listen(Number(process.argv[2] ?? 9000), "127.0.0.1");
