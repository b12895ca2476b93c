import os
from gantry_client import Client

gantry = Client(os.environ.get("GANTRY_URL", "http://127.0.0.1:8080"), os.environ.get("GANTRY_KEY", "demo-studio-key"))
job = gantry.submit({"user": "user-1", "kind": "generate", "allowed_regions": ["US"],
                     "payload": {"provider": "openai", "model": "gpt-image-1", "prompt": "a red kite over the sea"}})
done = gantry.wait(job.id)  # follows the job's event stream; polls if it cannot
print(done.status, done.result["object_key"] if done.result else done.error)
if done.status == "succeeded":
    open("kite.png", "wb").write(gantry.download(done.id))
