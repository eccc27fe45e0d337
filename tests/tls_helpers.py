"""Test TLS: a throwaway certificate authority (a CA, a server certificate for 127.0.0.1 and a client certificate, as
PEM files made with the `cryptography` package), and a TLS listener that records how a Kafka client logs in."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_pki(folder: Path, *, ca_name: str = "terrain test ca") -> Pki:
    """A CA and two certificates it signed (server: localhost and 127.0.0.1; client: CN terrain-test)."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(ca_name)).issuer_name(_name(ca_name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(valid[0]).not_valid_after(valid[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def issue(common_name: str, san: list[x509.GeneralName] | None) -> tuple[x509.Certificate, Key]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(valid[0]).not_valid_after(valid[1]))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = issue("localhost", [x509.DNSName("localhost"),
                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = issue("terrain-test", None)
    folder.mkdir(parents=True, exist_ok=True)
    return Pki(
        ca=_write_cert(ca, folder / "ca.crt"),
        server_cert=_write_cert(server, folder / "server.crt"),
        server_key=_write_key(server_key, folder / "server.key"),
        client_cert=_write_cert(client, folder / "user.crt"),
        client_key=_write_key(client_key, folder / "user.key"),
    )


@dataclass
class Handshake:
    """What one client did on a connection to `KafkaFrontDoor`: its certificate's CN, and its first requests."""

    client_cn: str | None
    requests: list[tuple[int, bytes]]  # (Kafka API key, the whole request)


class KafkaFrontDoor:
    """A TLS listener that speaks just enough Kafka to see how a client logs in: it answers ApiVersions and
    SaslHandshake (offering `mechanism`), records each request, and closes on the first one past those (a SCRAM
    client's first message, or Metadata without SASL). With `client_ca`, it demands a client certificate."""

    def __init__(self, pki: Pki, *, mechanism: str = "SCRAM-SHA-512", client_ca: Path | None = None) -> None:
        import ssl

        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca) if client_ca
                                                  else None)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.mechanism = mechanism.encode()
        self.seen: list[Handshake] = []
        self.port = 0
        self._server: Any = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> KafkaFrontDoor:
        import asyncio

        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: Any, writer: Any) -> None:
        import struct

        cert = writer.get_extra_info("peercert")
        cn = dict(item[0] for item in cert["subject"]).get("commonName") if cert else None
        shake = Handshake(cn, [])
        self.seen.append(shake)

        def answer(correlation: int, payload: bytes) -> None:
            body = struct.pack(">i", correlation) + payload
            writer.write(struct.pack(">i", len(body)) + body)

        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                api_key, _, correlation = struct.unpack(">hhi", request[:8])
                shake.requests.append((api_key, request))
                if api_key == 18:  # ApiVersions v0: every API up to v3, enough for the client to go on
                    apis = [(key, 0, 3) for key in range(40)]
                    answer(correlation, struct.pack(">hi", 0, len(apis))
                           + b"".join(struct.pack(">hhh", *a) for a in apis))
                elif api_key == 17:  # SaslHandshake: no error, one mechanism enabled
                    answer(correlation, struct.pack(">hih", 0, 1, len(self.mechanism)) + self.mechanism)
                else:
                    break
                await writer.drain()
        except Exception:  # the client gave up, or the handshake failed: what it sent is recorded
            pass
        finally:
            writer.close()
