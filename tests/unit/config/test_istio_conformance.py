"""The Istio conformance corpus (tests/conformance/istio): meshbus accepts what Istio accepts and refuses
what Istio refuses, for Istio's reason, through the validation ``meshctl analyze -f`` runs.

Every case is its own test; ``test_corpus_counts`` holds the totals to the issue's bar (valid N/N,
invalid >= 95%) and the terminal summary prints them (conftest.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from meshbus.bus.config.resources import resource_type
from meshbus.bus.config.result import FieldError, Level
from meshbus.bus.schemas.config import Document
from meshbus.control.cli.analyze import analyze_files
from meshbus.control.config import admission

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[2] / "conformance" / "istio"


@functools.cache
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((CORPUS / "manifest.yaml").read_text())
    return data


@dataclass(frozen=True)
class Verdict:
    file: str
    name: str
    want: str  # "valid" | "invalid"
    reason: str
    errors: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.errors

    @property
    def right(self) -> bool:
        """Istio's verdict, and for a refusal, Istio's reason among meshbus's errors."""
        if self.want == "valid":
            return self.accepted
        return any(self.reason in e for e in self.errors)


def _errors_of(errors: list[FieldError], name: str) -> tuple[str, ...]:
    return tuple(e.render() for e in errors if e.resource.endswith(f"/{name}"))


@functools.cache
def verdicts() -> tuple[Verdict, ...]:
    out = []
    for file, entry in manifest()["crds"].items():
        path = CORPUS / "crds" / file
        loaded = admission.load_documents([Document(file, path.read_text())])
        for name, case in entry["cases"].items():
            errors = _errors_of(loaded.validation.errors, name)
            out.append(Verdict(file, name, case["verdict"], case.get("reason", ""), errors))
    return tuple(out)


def counts() -> tuple[int, int, int, int]:
    """(valid accepted, valid, invalid refused for Istio's reason, invalid)."""
    vs = verdicts()
    valid = [v for v in vs if v.want == "valid"]
    invalid = [v for v in vs if v.want == "invalid"]
    return sum(v.right for v in valid), len(valid), sum(v.right for v in invalid), len(invalid)


def summary() -> str:
    ok_valid, n_valid, ok_invalid, n_invalid = counts()
    return (
        f"Istio conformance: valid accepted {ok_valid}/{n_valid}, "
        f"invalid refused with Istio's reason {ok_invalid}/{n_invalid}"
    )


def _case_ids() -> list[tuple[str, str]]:
    return [(file, name) for file, entry in manifest()["crds"].items() for name in entry["cases"]]


def test_every_corpus_file_is_in_the_manifest() -> None:
    listed = set(manifest()["crds"]) | {f"../analyzers/{f}" for f in manifest()["analyzers"]}
    on_disk = {p.name for p in (CORPUS / "crds").glob("*.yaml")}
    on_disk |= {f"../analyzers/{p.name}" for p in (CORPUS / "analyzers").glob("*.yaml")}
    assert on_disk == listed
    assert set(manifest()["istio-samples"]) == {p.name for p in (CORPUS / "istio-samples").iterdir()}
    for file, entry in manifest()["crds"].items():
        docs = YAML(typ="safe").load_all((CORPUS / "crds" / file).read_text())
        items = [i for d in docs if d for i in (d["items"] if d.get("kind") == "List" else [d])]
        names = [i["metadata"]["name"] for i in items if resource_type(i["apiVersion"], i["kind"])]
        assert len(names) == len(set(names)), f"{file}: case names must be unique"
        assert set(names) == set(entry["cases"]), f"{file}: the manifest's cases differ from the file's"


@pytest.mark.parametrize(("file", "name"), _case_ids(), ids=[f"{f[:-5]}:{n}" for f, n in _case_ids()])
def test_case(file: str, name: str) -> None:
    verdict = next(v for v in verdicts() if (v.file, v.name) == (file, name))
    if verdict.want == "valid":
        assert verdict.accepted, "Istio accepts this; meshbus refused it:\n" + "\n".join(verdict.errors)
    else:
        assert verdict.errors, "Istio refuses this; meshbus accepted it"
        assert verdict.right, f"refused, but not for Istio's reason ({verdict.reason!r}):\n" + "\n".join(
            verdict.errors
        )


def test_corpus_counts() -> None:
    ok_valid, n_valid, ok_invalid, n_invalid = counts()
    assert n_valid > 40 and n_invalid > 100, summary()  # the corpus did not silently shrink
    assert ok_valid == n_valid, summary()
    assert ok_invalid >= 0.95 * n_invalid, summary()


def test_accepted_kinds_meshbus_does_not_run_say_so() -> None:
    """EnvoyFilter, WasmPlugin, WorkloadGroup, ProxyConfig and the Gateway API kinds are
    accepted with a NOT ENFORCED warning naming what to use instead, never silently."""
    for file in ("envoy-filter.yaml", "wasm-plugin.yaml", "gateway-api.yaml"):
        loaded = admission.load_documents([Document(file, (CORPUS / "crds" / file).read_text())])
        valid = [n for n, c in manifest()["crds"][file]["cases"].items() if c["verdict"] == "valid"]
        for name in valid:
            warned = [w.render() for w in loaded.validation.warnings if w.resource.endswith(f"/{name}")]
            assert any("NOT ENFORCED" in w for w in warned), (file, name, warned)
    envoy = admission.load_documents(
        [Document("e.yaml", (CORPUS / "crds" / "envoy-filter.yaml").read_text())]
    )
    assert any("Plugin" in w.message and "LocalRateLimit" in w.message for w in envoy.validation.warnings)


def test_kubernetes_documents_are_skipped_with_one_info_line_each() -> None:
    text = (CORPUS / "crds" / "kubernetes-documents.yaml").read_text()
    loaded = admission.load_documents([Document("k.yaml", text)])
    assert loaded.validation.ok and not loaded.validation.warnings
    assert [r.ref for r in loaded.resources] == ["DestinationRule default/listed-shop"]  # from the List
    skipped = [m.resource for m in loaded.validation.infos]
    assert skipped == manifest()["crds"]["kubernetes-documents.yaml"]["skipped"]
    assert all(m.message.startswith("skipped ") and m.line > 0 for m in loaded.validation.infos)
    assert [k.kind for k in loaded.kubernetes] == [
        "ServiceAccount",
        "Service",
        "Deployment",
        "IstioOperator",
        "ConfigMap",
    ]


def _analyzer_ids() -> list[str]:
    return list(manifest()["analyzers"])


@pytest.mark.parametrize("file", _analyzer_ids())
def test_analyzer_case(file: str) -> None:
    findings = analyze_files([str(CORPUS / "analyzers" / file)])
    got = {(m.code, m.resource, m.level.value) for m in findings.messages() if m.code}
    for want in manifest()["analyzers"][file]["expect"]:
        assert (want["code"], want["resource"], want["level"]) in got, (want, sorted(got))
    errors = [m for m in findings.errors if not m.code]
    assert not errors, [e.render() for e in errors]  # the scenario itself is valid config
    if any(w["level"] == "Error" for w in manifest()["analyzers"][file]["expect"]):
        assert any(m.level is Level.ERROR for m in findings.messages())
