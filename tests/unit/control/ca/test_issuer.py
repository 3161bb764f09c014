"""Issued X.509-SVIDs follow the SPIFFE rules; CA material loads, generates and refuses clearly."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshbus.bus.spiffe import SpiffeId, load_pem_chain, svid_id
from meshbus.control.ca.errors import CaConfigError
from meshbus.control.ca.issuer import Issuer, IssuerConfig, key_to_pem, material_from_pem
from meshbus.control.ca.material import load_operator_material, load_or_create_root

from .pki import NOW, TD, intermediate, pem, root, svid


def _verify(chain: list[x509.Certificate], roots: list[x509.Certificate], at: dt.datetime = NOW) -> None:
    verifier = PolicyBuilder().store(Store(roots)).time(at).build_client_verifier()
    verifier.verify(chain[0], chain[1:])


def test_leaf_fields_follow_x509_svid() -> None:
    ca = root()
    _tls, issued = svid(ca, "bookinfo", "reviews")
    leaf = issued.leaf
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty, so the SAN must be critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    ]
    assert len(list(san.value)) == 1  # exactly one SAN, no DNS names
    assert leaf.subject == x509.Name([])
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.not_valid_after_utc - NOW == dt.timedelta(hours=24)
    assert NOW - leaf.not_valid_before_utc == dt.timedelta(minutes=1)  # clock-skew backdate
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert svid_id(leaf) == SpiffeId.workload(TD, "bookinfo", "reviews")


def test_serials_are_random_and_large() -> None:
    ca = root()
    serials = {svid(ca)[1].leaf.serial_number for _ in range(20)}
    assert len(serials) == 20
    assert max(serials).bit_length() > 120


def test_chain_verifies_against_root_with_cryptography() -> None:
    ca = root()
    _tls, issued = svid(ca)
    _verify(load_pem_chain(issued.chain_pem), [ca.root])
    with pytest.raises(VerificationError):
        _verify(load_pem_chain(issued.chain_pem), [root().root])  # another mesh's root


def test_root_is_a_spiffe_signing_cert() -> None:
    ca = root()
    cert = ca.root
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert uris == ["spiffe://cluster.local"]  # no path on a signing certificate
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=3650)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"


def test_lifetime_default_requested_and_capped() -> None:
    ca = root()
    issuer = Issuer(
        ca, IssuerConfig(workload_ttl=dt.timedelta(hours=1), max_workload_ttl=dt.timedelta(hours=5))
    )
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    sid = SpiffeId.workload(TD, "a", "b")
    assert issuer.sign(key, sid, NOW).not_after - NOW == dt.timedelta(hours=1)
    assert issuer.sign(key, sid, NOW, dt.timedelta(minutes=5)).not_after - NOW == dt.timedelta(minutes=5)
    assert issuer.sign(key, sid, NOW, dt.timedelta(days=9)).not_after - NOW == dt.timedelta(hours=5)


def test_leaf_never_outlives_its_signing_cert() -> None:
    inter = intermediate(root())  # valid for 365 days
    issuer = Issuer(inter, IssuerConfig(max_workload_ttl=dt.timedelta(days=900)))
    issued = issuer.sign(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        SpiffeId.workload(TD, "a", "b"),
        NOW,
        dt.timedelta(days=800),
    )
    assert issued.not_after == inter.signing_cert.not_valid_after_utc


def test_operator_intermediate_chains_to_company_root(tmp_path: Path) -> None:
    company = root()
    inter = intermediate(company)
    (tmp_path / "ca.pem").write_bytes(pem(inter.signing_cert))
    (tmp_path / "ca.key").write_bytes(key_to_pem(inter.signing_key, b"s3cret"))
    (tmp_path / "chain.pem").write_bytes(pem(company.root))
    material = load_operator_material(
        str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"), str(tmp_path / "chain.pem"), b"s3cret"
    )
    assert material.root == company.root and material.signing_cert == inter.signing_cert
    _tls, issued = svid(material)
    chain = load_pem_chain(issued.chain_pem)
    assert len(chain) == 2 and chain[1] == inter.signing_cert  # leaf + intermediate, root not sent
    _verify(chain, [company.root])


def test_operator_material_errors_are_clear() -> None:
    company = root()
    inter = intermediate(company)
    with pytest.raises(CaConfigError, match="does not match"):
        material_from_pem(pem(inter.signing_cert), key_to_pem(company.signing_key, None), pem(company.root))
    with pytest.raises(CaConfigError, match="not self-signed"):
        material_from_pem(pem(inter.signing_cert), key_to_pem(inter.signing_key, None))
    with pytest.raises(CaConfigError, match="chain is broken"):
        material_from_pem(pem(inter.signing_cert), key_to_pem(inter.signing_key, None), pem(root().root))
    with pytest.raises(CaConfigError, match="passphrase"):
        material_from_pem(pem(inter.signing_cert), key_to_pem(inter.signing_key, b"pw"), pem(company.root))
    tls, leaf = svid(company)
    with pytest.raises(CaConfigError, match="cA=false"):
        material_from_pem(pem(leaf.leaf), key_to_pem(tls.key, None))  # type: ignore[arg-type]


def test_root_generated_once_with_0600_key_and_reused(tmp_path: Path) -> None:
    first, created = load_or_create_root(tmp_path / "ca", TD, None, NOW)
    assert created
    key_file = tmp_path / "ca" / "ca-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"ENCRYPTED" not in key_file.read_bytes()
    again, created = load_or_create_root(tmp_path / "ca", TD, None, NOW)
    assert not created and again.root == first.root


def test_root_key_encrypted_at_rest_with_passphrase(tmp_path: Path) -> None:
    load_or_create_root(tmp_path, TD, b"correct horse", NOW)
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in (tmp_path / "ca-key.pem").read_bytes()
    with pytest.raises(CaConfigError, match="passphrase"):
        load_or_create_root(tmp_path, TD, None, NOW)
    material, _ = load_or_create_root(tmp_path, TD, b"correct horse", NOW)
    serialization.load_pem_private_key((tmp_path / "ca-key.pem").read_bytes(), b"correct horse")
    assert material.signing_cert == material.root


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_verify_accepts_leaf_against_bundle(tmp_path: Path) -> None:
    company = root()
    for material in (company, intermediate(company)):
        _tls, issued = svid(material)
        (tmp_path / "bundle.pem").write_bytes(company.root_pem)
        chain = load_pem_chain(issued.chain_pem)
        (tmp_path / "leaf.pem").write_bytes(pem(chain[0]))
        (tmp_path / "untrusted.pem").write_bytes(b"".join(pem(c) for c in chain[1:]) or pem(chain[0]))
        r = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(tmp_path / "bundle.pem"),
                "-untrusted",
                str(tmp_path / "untrusted.pem"),
                str(tmp_path / "leaf.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "OK" in r.stdout
    (tmp_path / "other.pem").write_bytes(root().root_pem)
    r = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "other.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert r.returncode != 0


@pytest.mark.parametrize(("kind", "name"), [("role", "operator"), ("role", "bootstrap"), ("proxy", "plain")])
def test_the_ca_never_signs_a_bus_principals_id(kind: str, name: str) -> None:
    """nats-server maps ``spiffe://<td>/meshbus/...`` to a component role's user (bus_auth): a workload
    certificate with such an ID would act as that role, so the issuer refuses it whatever the caller."""
    issuer = Issuer(root(), IssuerConfig(trust_domain=TD))
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="reserved for the bus's own principals"):
        issuer.sign(key.public_key(), SpiffeId.bus_principal(TD, kind, name), NOW)
    assert issuer.sign(
        key.public_key(), SpiffeId.workload(TD, "meshbus", name), NOW
    ).leaf  # /ns/meshbus: a workload
