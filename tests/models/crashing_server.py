"""An OpenAI-compatible chat server that kills itself with a signal on its N-th chat request.

    python tests/models/crashing_server.py --port P --crash-at N [--signal SIGILL] [--model NAME]
    python tests/models/crashing_server.py --port P --crash-once-nonempty FILE   # first request once FILE has data

The fault a real llama.cpp build produces on some CPUs (an illegal instruction in a worker thread), which this
machine's CPU cannot be made to produce. Answers before the N-th are ``"Answer: A"``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--crash-at", type=int, default=0, help="1 = the first chat request; 0 = never")
    p.add_argument("--crash-once-nonempty", default=None, help="crash on the first chat request once this file has data")
    p.add_argument("--signal", default="SIGILL")
    p.add_argument("--model", default="crashing")
    args = p.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from the planted crash
    sig = signal.Signals[args.signal]
    seen = {"chat": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _json(self, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._json({"object": "list", "data": [{"id": args.model, "object": "model"}]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                seen["chat"] += 1
                n = seen["chat"]
            print(f"chat request {n}", flush=True)
            if (args.crash_at and n >= args.crash_at) or (
                    args.crash_once_nonempty and os.path.exists(args.crash_once_nonempty)
                    and os.path.getsize(args.crash_once_nonempty) > 0):
                # In this thread, now: a signal sent with kill() may reach another thread while this one
                # still answers, so the fault would land a request late.
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
                signal.raise_signal(sig)
                time.sleep(60)  # never answer this request
            self._json({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Answer: A"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"serving http://127.0.0.1:{args.port}/v1", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
