"""A real SMTP server on loopback for Portcullis' end-to-end tests (aiosmtpd).

Usage: server.py PORT_FILE OUT_DIR USERNAME PASSWORD [--starttls CERT KEY | --implicit CERT KEY]

With --starttls the server offers STARTTLS and requires it (AUTH only after it); with
--implicit it speaks TLS from the first byte. CERT and KEY are PEM files.

Listens on 127.0.0.1 on a free port (written to PORT_FILE), requires AUTH (PLAIN or LOGIN,
without TLS: loopback only) with USERNAME/PASSWORD, and writes every delivered message to
OUT_DIR/N.json as {"mail_from", "rcpt_tos", "data"} (data: the raw message, as received).
A recipient whose local part is `reject` is refused with 550; a message whose subject holds
`FAIL-DATA` is refused with 554 after DATA.
"""

import json
import os
import socket
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword, SMTP


class Recorder:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@", 1)[0] == "reject":
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content.decode("utf-8", "surrogateescape")
        if "FAIL-DATA" in raw:
            return "554 5.6.0 message refused: FAIL-DATA"
        self.count += 1
        record = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos, "data": raw}
        tmp = os.path.join(self.out_dir, f".{self.count}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(self.out_dir, f"{self.count}.json"))
        return "250 OK queued"


def main():
    port_file, out_dir, username, password = sys.argv[1:5]
    mode, tls = None, None
    if len(sys.argv) == 8 and sys.argv[5] in ("--starttls", "--implicit"):
        mode = sys.argv[5]
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(sys.argv[6], sys.argv[7])

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == username
            and auth_data.password.decode() == password
        )
        # On failure, echo what was tried, as careless servers do: the gateway must scrub it.
        if not ok:
            tried = auth_data.password.decode(errors="replace") if isinstance(auth_data, LoginPassword) else ""
            return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad credentials for {tried}")
        return AuthResult(success=True)

    class Factory(Controller):
        def factory(self):
            if mode == "--starttls":
                return SMTP(
                    self.handler,
                    hostname="mail.test",
                    auth_required=True,
                    auth_require_tls=True,
                    require_starttls=True,
                    tls_context=tls,
                    authenticator=authenticator,
                )
            return SMTP(
                self.handler,
                hostname="mail.test",
                auth_required=True,
                auth_require_tls=False,
                authenticator=authenticator,
            )

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ssl_context = tls if mode == "--implicit" else None
    controller = Factory(Recorder(out_dir), hostname="127.0.0.1", port=port, ssl_context=ssl_context)
    controller.start()
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, port_file)
    try:
        # The controller serves from its own thread; this one waits until killed (or stdin closes).
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
