"""A platform's webhook endpoint: verifies each delivery, then acts on it.

    GANTRY_WEBHOOK_SECRET=whsec_... python webhook_receiver.py 9000
"""

import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from gantry_client import WebhookVerificationError, webhooks

SECRET = os.environ["GANTRY_WEBHOOK_SECRET"]


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            event = webhooks.verify(SECRET, dict(self.headers), body)
        except WebhookVerificationError as e:
            self.send_response(401)
            self.end_headers()
            print("refused:", e)
            return
        # Answer at once; do the work afterwards (a slow answer is retried as a failure).
        self.send_response(204)
        self.end_headers()
        print(event["type"], event["data"]["job_id"], event["data"].get("output_url", ""))


HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 9000), Hook).serve_forever()
