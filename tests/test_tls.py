"""TLS machinery is loaded only when the configuration asks for TLS, and works when it does."""

from __future__ import annotations

import datetime
import json
import os
import sys
from typing import Any, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.testing import start_simulator
from acetwist.testing import Player, ProcessWorker, fetch, repo_root
from acetwist.tls import tls_reason

#: modules that only TLS needs (pyOpenSSL, cryptography, service-identity, Twisted's TLS layers)
TLS_MODULES = ("OpenSSL", "cryptography", "service_identity", "twisted.internet.ssl", "twisted.protocols.tls")

#: builds the service as twistd does (no reactor passed) and prints which TLS modules are loaded
PROBE = f"""
import json, sys
from acetwist.tap import Options, makeService
options = Options(environ={{}})
options.parseOptions(sys.argv[1:])
makeService(options)
print(json.dumps([m for m in {TLS_MODULES!r} if sys.modules.get(m) is not None]))
"""


class TLSReasonTests(TestCase):
    def test_plain_http_needs_no_tls(self) -> None:
        """http engines and orchestrator on a tcp, unix or systemd listener need no TLS."""
        for listen in ("tcp:8080", "unix:/run/acetwist.sock", "systemd:domain=INET:index=0"):
            self.assertIsNone(tls_reason(listen, ("http://127.0.0.1:6878", None, "http://orch:8000/api")))

    def test_https_urls_and_ssl_listener_need_tls(self) -> None:
        """An https engine or orchestrator URL (any case), or an ssl: listener, needs TLS and says which."""
        self.assertIn("engine:6878", tls_reason("tcp:8080", ("http://a:6878", "https://engine:6878")) or "")
        self.assertIn("orch", tls_reason("tcp:8080", ("http://a:6878", "HTTPS://orch")) or "")
        self.assertEqual(tls_reason("ssl:443:privateKey=k.pem", ("http://a:6878",)), "an ssl: listener")


class ImportTests(TestCase):
    timeout = 60

    def probe(self, *options: str) -> Any:
        env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
        d = getProcessOutputAndValue(sys.executable, ["-c", PROBE, "--listen", "tcp:0", *options],
                                     env=env, path=repo_root(), reactor=reactor)

        def loaded(result: Tuple[bytes, bytes, int]) -> List[str]:
            out, err, code = result
            self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
            return list(json.loads(out.decode().strip().splitlines()[-1]))

        return d.addCallback(loaded)

    @inlineCallbacks
    def test_http_only_service_loads_no_tls(self) -> Any:
        """Building the service for http engines, with or without Redis, imports none of the TLS modules."""
        loaded = yield self.probe("--engine", "http://127.0.0.1:6878")
        self.assertEqual(loaded, [])
        loaded = yield self.probe("--engine", "http://127.0.0.1:6878", "--redis", "redis://127.0.0.1:1/0")
        self.assertEqual(loaded, [])

    @inlineCallbacks
    def test_https_engine_loads_tls(self) -> Any:
        """Building the service with an https engine imports pyOpenSSL and Twisted's TLS layers as before."""
        loaded = yield self.probe("--engine", "http://127.0.0.1:6878", "--engine", "https://127.0.0.1:6879")
        self.assertEqual(loaded, list(TLS_MODULES))


def self_signed(directory: str, host: str = "localhost") -> Tuple[str, str]:
    """A self-signed certificate for C{host} and its key, written as PEM files: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class HTTPSEngineTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_players_stream_through_an_https_engine(self) -> Any:
        """A twistd proxy given an https engine verifies its certificate and streams valid TS to a player."""
        cert, key = self_signed(os.path.abspath(self.mktemp()))
        sim = yield start_simulator(reactor, prebuffer=0.2, burst=1.0, bitrate=2_000_000)
        self.addCleanup(sim.stop)
        port = yield serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}").listen(sim.engines[0].site)
        self.addCleanup(port.stopListening)
        engine = f"https://localhost:{port.getHost().port}"
        worker = ProcessWorker(reactor, "tls", "--engine", engine, env={"SSL_CERT_FILE": cert})
        self.addCleanup(worker.stop)
        yield worker.start()
        self.assertIn(b"TLS support loaded for https URL localhost", worker.output)
        player = Player(reactor, f"{worker.url}/ace/getstream?id={DEFAULT_CONTENTS[0].content_id}",
                        limit=400_000).start()
        yield player.done
        self.assertEqual(player.status, 200, worker.output[-3000:])
        self.assertTrue(player.checker.aligned_at_start)
        self.assertEqual(player.checker.cc_errors, 0)
        self.assertGreater(player.checker.packets, 1000)
        status, _, body = yield fetch(reactor, f"{worker.url}/status")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["engines"][0]["url"], engine)
