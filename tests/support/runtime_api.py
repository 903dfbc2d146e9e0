#!/usr/bin/env python3
"""A Lambda Runtime API for coldpack's end-to-end tests, faithful to AWS's documentation.

cargo-lambda's emulator differs from Lambda in ways that matter to a bootstrap: it
answers 200 where Lambda answers 202, sends no Content-Type on /next, a relative
deadline instead of an epoch one, and holds an init error until an invoke takes it.
This server behaves as documented at
https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html, so that the tests cover
both. Python stdlib only, bound to 127.0.0.1, bounded in time everywhere: every wait has
a timeout and the server exits by itself after --max-lifetime seconds.

Usage: runtime_api.py [--port N] [--invoke-timeout S] [--function-timeout S] [--max-lifetime S]
Prints the bound port as its first stdout line. Set AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT.

Test endpoints, beside the Runtime API:
  POST /_test/invoke          body = event; waits until the function answers (or
                              ?timeout=S), then returns 200 with a JSON envelope
                              {"outcome": "response"|"error"|"init_error", "request_id",
                              "error_type", "payload"}, or 504 {"outcome": "timeout"}.
  GET  /_test/init-errors     the init errors received, as a JSON list of
                              {"error_type", "content_type", "body", "raw"}.
  GET  /_test/queued          {"queued": N}: invocations no runtime has taken yet, so
                              that a test can start a runtime only once its invoke waits.
"""

import argparse
import collections
import json
import select
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:coldpack-test"
# Lambda caps a response at 6 MB; anything larger is refused rather than buffered.
MAX_BODY = 6 * 1024 * 1024
POLL = 0.1


class Invocation:
    def __init__(self, event):
        self.request_id = str(uuid.uuid4())
        self.event = event
        self.done = threading.Event()
        self.outcome = None

    def finish(self, outcome, error_type, payload):
        if not self.done.is_set():
            self.outcome = {
                "outcome": outcome,
                "request_id": self.request_id,
                "error_type": error_type,
                "payload": payload,
            }
            self.done.set()


class State:
    def __init__(self, function_timeout):
        self.lock = threading.Condition()
        self.queued = collections.deque()
        self.in_flight = {}
        self.init_errors = []
        self.function_timeout = function_timeout
        self.stopping = threading.Event()

    def enqueue(self, invocation):
        with self.lock:
            self.queued.append(invocation)
            self.lock.notify_all()

    def withdraw(self, invocation):
        with self.lock:
            if invocation in self.queued:
                self.queued.remove(invocation)
            self.in_flight.pop(invocation.request_id, None)

    def next_invocation(self, still_waiting):
        """Blocks (in short slices, so a dead runtime or a shutdown is noticed) until
        an invocation is queued; returns None if the caller stops waiting first."""
        with self.lock:
            while not self.stopping.is_set() and still_waiting():
                if self.queued:
                    invocation = self.queued.popleft()
                    self.in_flight[invocation.request_id] = invocation
                    return invocation
                self.lock.wait(POLL)
        return None

    def requeue(self, invocation):
        with self.lock:
            self.in_flight.pop(invocation.request_id, None)
            self.queued.appendleft(invocation)
            self.lock.notify_all()

    def take(self, request_id):
        with self.lock:
            return self.in_flight.pop(request_id, None)

    def record_init_error(self, record):
        """Lambda fails the invocation that triggered the init with the runtime's error;
        here that is every invocation waiting."""
        with self.lock:
            self.init_errors.append(record)
            waiting = list(self.queued) + list(self.in_flight.values())
            self.queued.clear()
            self.in_flight.clear()
        for invocation in waiting:
            invocation.finish("init_error", record["error_type"], record["body"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "coldpack-test-runtime-api"

    @property
    def state(self):
        return self.server.state

    def log_message(self, format, *args):
        sys.stderr.write("runtime_api: %s\n" % (format % args))

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == PREFIX + "/invocation/next":
            self.next_invocation()
        elif path == "/_test/init-errors":
            with self.state.lock:
                errors = list(self.state.init_errors)
            self.send_json(200, errors)
        elif path == "/_test/queued":
            with self.state.lock:
                queued = len(self.state.queued)
            self.send_json(200, {"queued": queued})
        else:
            self.send_json(404, {"errorMessage": "no such route", "errorType": "NotFound"})

    def do_POST(self):
        url = urlsplit(self.path)
        parts = url.path.split("/")
        try:
            body = self.read_body()
        except ValueError as err:
            self.close_connection = True
            self.send_json(413, {"errorMessage": str(err), "errorType": "RequestEntityTooLarge"})
            return
        if url.path == "/_test/invoke":
            self.invoke(body, parse_qs(url.query))
        elif url.path == PREFIX + "/init/error":
            record = self.error_record(body)
            self.state.record_init_error(record)
            self.send_json(202, {"status": "OK"})
        elif url.path.startswith(PREFIX + "/invocation/") and len(parts) == 6 and parts[5] in ("response", "error"):
            invocation = self.state.take(parts[4])
            if invocation is None:
                self.send_json(400, {"errorMessage": "unknown request id", "errorType": "InvalidRequestID"})
                return
            if parts[5] == "response":
                invocation.finish("response", None, decode(body))
            else:
                record = self.error_record(body)
                invocation.finish("error", record["error_type"], record["body"])
            self.send_json(202, {"status": "OK"})
        else:
            self.send_json(404, {"errorMessage": "no such route", "errorType": "NotFound"})

    def next_invocation(self):
        invocation = self.state.next_invocation(self.client_is_connected)
        if invocation is None:
            self.close_connection = True
            return
        deadline_ms = int((time.time() + self.state.function_timeout) * 1000)
        body = invocation.event
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Lambda-Runtime-Aws-Request-Id", invocation.request_id)
            self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
            self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            # The runtime died between our check and the write: give the event to the next one.
            self.state.requeue(invocation)
            self.close_connection = True

    def client_is_connected(self):
        """A killed runtime's /next connection is closed: readable with nothing to read."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return True
        try:
            return self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def invoke(self, event, query):
        timeout = float(query.get("timeout", [self.server.invoke_timeout])[0])
        invocation = Invocation(event)
        self.state.enqueue(invocation)
        if invocation.done.wait(timeout):
            self.send_json(200, invocation.outcome)
        else:
            self.state.withdraw(invocation)
            self.send_json(504, {"outcome": "timeout", "request_id": invocation.request_id,
                                 "error_type": None, "payload": None})

    def error_record(self, body):
        return {
            "error_type": self.headers.get("Lambda-Runtime-Function-Error-Type"),
            "content_type": self.headers.get("Content-Type"),
            "body": decode(body),
            "raw": body.decode("utf-8", "replace"),
        }

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline(100).split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline(1000).strip():
                        pass  # trailers
                    return body
                if len(body) + size > MAX_BODY:
                    raise ValueError("body larger than %d bytes" % MAX_BODY)
                body += self.rfile.read(size)
                self.rfile.readline(10)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body larger than %d bytes" % MAX_BODY)
        return self.rfile.read(length)

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def decode(body):
    """JSON when it parses, text otherwise: the tests assert on what the runtime sent."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--invoke-timeout", type=float, default=20.0,
                        help="how long /_test/invoke waits for the function, in seconds")
    parser.add_argument("--function-timeout", type=float, default=30.0,
                        help="the function timeout behind Lambda-Runtime-Deadline-Ms, in seconds")
    parser.add_argument("--max-lifetime", type=float, default=600.0,
                        help="exit by itself after this many seconds, even if never told to")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args.function_timeout)
    server.invoke_timeout = args.invoke_timeout

    def stop(*_):
        server.state.stopping.set()
        # shutdown() waits for serve_forever, so it cannot run on serve_forever's thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watchdog = threading.Timer(args.max_lifetime, stop)
    watchdog.daemon = True
    watchdog.start()

    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=POLL)
    server.server_close()


if __name__ == "__main__":
    main()
