"""The client-id binding of `ppmid broker start --engine rabbitmq` (docs/security.md,
"Broker identity"): a loopback HTTP service RabbitMQ asks through its HTTP auth backend
(`rabbitmq_auth_backend_http`, shipped with the server).

RabbitMQ 3.10 has nothing like mosquitto's `use_username_as_clientid`: any certificate the
CA signed could connect with gateway A's client id and take A's session over. Measured
here (3.10.8, TLS certificate login): the backend's `user_path` request carries only the
user name, but its `vhost_path` request, made while the MQTT plugin handles CONNECT,
carries `client_id`; a "deny" there refuses the CONNECT (CONNACK 5, not authorised)
before the plugin registers the client id, so the session it names is left alone.

The broker runs this backend beside its internal one (advanced.config): a connection needs
both to allow. The internal backend keeps the users, permissions and topic permissions
(broker_rabbitmq.definitions); this service allows everything but a client id its
certificate may not use. Standard library only: it runs as its own process, started and
stopped with the broker (broker_rabbitmq.start_clientid_auth / stop_clientid_auth).
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

# A certificate identity may use its own name as client id, or its name + "/" + anything:
# a DCC User's tools each keep their own session (ppmid replay, status). No identity name
# contains "/" (host_tools/broker.py), so no certificate reaches another's client ids.
TOOL_SEP = "/"


def client_id_allowed(username, client_id):
    if not username or not client_id:
        return False
    return client_id == username or client_id.startswith(username + TOOL_SEP)


def decide(path, query):
    """RabbitMQ's question (request path, query parameters as a dict of strings) ->
    "allow" or "deny"."""
    if path == "/vhost":
        return "allow" if client_id_allowed(query.get("username"), query.get("client_id")) else "deny"
    if path in ("/user", "/resource", "/topic"):
        # the internal backend decides these (both must allow)
        return "allow"
    return "deny"


class _Handler(BaseHTTPRequestHandler):
    # keep-alive: RabbitMQ's HTTP client reuses its connections, so a question costs no
    # TCP connect and no new thread (answers carry Content-Length); no Nagle, or the
    # body, written after the headers, waits for the client's delayed ACK (~40 ms)
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        answer = decide(u.path, q)
        if answer == "deny":
            sys.stderr.write("refused: %s user %r client id %r\n" % (u.path, q.get("username"), q.get("client_id")))
            sys.stderr.flush()
        body = answer.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # one line per refusal (above), not one per request


def serve(info_path):
    """Listen on a free loopback port; write {"pid", "port"} to info_path once listening."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    tmp = info_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "port": srv.server_address[1]}, f)
    os.replace(tmp, info_path)
    srv.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1])
