"""An HTTPS endpoint for webhook tests: answers every POST with 200 and
{"id": "tls-1"} over TLS with the given certificate and key. Binds
127.0.0.1:0 and prints "listening on PORT"; each request's path is appended
to requests.txt in the current directory.

    python3 https_server.py CERT.pem KEY.pem
"""
import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        with open("requests.txt", "a") as f:
            f.write(self.path + "\n")
        body = b'{"id":"tls-1"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("listening on", server.server_address[1], flush=True)
server.serve_forever()
