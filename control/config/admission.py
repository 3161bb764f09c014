"""What may be stored: per-document validation, then cross-resource analysis against the store. Sans-IO.

Error or warning follows istioctl analyze's levels (meshbus.bus.config.analysis), with one
deliberate change: a ``Referenced host not found`` (IST0101 on a ``host`` field) is a warning
here, not an error. istiod's analyzer sees every Kubernetes Service; meshbus-config does not:
hosts come from workloads that register with discovery at any time, usually *after* their
routing config is applied, so refusing such an apply would make the normal order impossible. For the same reason a
DestinationRule for a host nobody declares (IST0174) is an Info, not a Warning. A host that
discovery's live registry holds (``registry_hosts``, asked by the config service) is known: no finding.
References that are pure config (a subset no DestinationRule defines, a gateway, a route name,
a port of a ServiceEntry) stay errors and refuse the change, as istioctl analyze exits non-zero.

On apply/delete/rollback only findings that the change *introduces* can refuse it: an error that
already held for the stored set (say, one written before a validator became stricter) is not
blamed on an unrelated apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence

from meshbus.bus.config import analyze
from meshbus.bus.config.loader import LoadResult, load_text
from meshbus.bus.config.resources import Resource
from meshbus.bus.config.result import FieldError, Level, Validation
from meshbus.bus.config.source import Source
from meshbus.bus.schemas.config import Document
from meshbus.bus.subjects import Subjects

REFERENCED_RESOURCE_NOT_FOUND = "IST0101"
UNKNOWN_DR_HOST = "IST0174"
_REGISTRY_NOTE = " (the host may be registered by a workload later)"


def load_documents(documents: Sequence[Document]) -> LoadResult:
    """Validate every document of every file; duplicates across files are errors too."""
    result = LoadResult()
    for doc in documents:
        part = load_text(doc.text, doc.file)
        result.resources.extend(part.resources)
        result.validation.extend(part.validation)
    _check_keys(result)
    first: dict[tuple[str, str, str], Resource] = {}
    for res in result.resources:
        prev = first.setdefault(res.key, res)
        if prev is not res and prev.source.file != res.source.file:  # same-file ones: load_text reported them
            result.validation.add(
                FieldError(
                    Source(res.source.file, res.source.line_of(("metadata", "name"))),
                    "metadata.name",
                    f"duplicate resource: {res.ref} is also defined at {prev.source}",
                    resource=res.ref,
                )
            )
    return result


def _check_keys(result: LoadResult) -> None:
    """Every resource needs a KV key (``Kind.namespace.name``): a dotted name cannot be one."""
    kept = []
    for res in result.resources:
        try:
            Subjects.config_key(res.kind, res.namespace, res.name)
        except ValueError:
            result.validation.add(
                FieldError(
                    Source(res.source.file, res.source.line_of(("metadata", "name"))),
                    "metadata.name",
                    "meshbus stores a resource under Kind.namespace.name, so a name may not contain '.'",
                    res.name,
                    res.ref,
                )
            )
            continue
        kept.append(res)
    result.resources[:] = kept


def registry_policy(validation: Validation) -> Validation:
    """Downgrade findings that depend on the workload registry (see module docstring)."""
    out = Validation()
    for m in validation.messages():
        if m.code == REFERENCED_RESOURCE_NOT_FOUND and m.level is Level.ERROR and _is_host_ref(m):
            m = dataclasses.replace(m, level=Level.WARNING, message=m.message + _REGISTRY_NOTE)
        elif m.code == UNKNOWN_DR_HOST and m.level is Level.WARNING:
            m = dataclasses.replace(m, level=Level.INFO, message=m.message + _REGISTRY_NOTE)
        out.add(m)
    return out


def _is_host_ref(m: FieldError) -> bool:
    return m.path == "host" or m.path.endswith(".host")


def analyze_set(resources: Iterable[Resource], registry_hosts: Collection[str] = ()) -> Validation:
    """Cross-resource findings for a set, under the config service's registry policy.

    ``registry_hosts``: FQDNs of the services discovery's live registry holds; a host found there
    is no finding at all (the policy above only softens hosts nobody knows yet)."""
    return registry_policy(analyze(resources, registry_hosts=registry_hosts))


def _identity(m: FieldError) -> tuple[str, str, str, str]:
    return (m.code, m.resource, m.path, m.message)


def analysis_delta(
    before: Sequence[Resource],
    after: Sequence[Resource],
    changed: Iterable[str],
    registry_hosts: Collection[str] = (),
) -> Validation:
    """Findings of the ``after`` set that a change introduces.

    Errors: only new ones (not present for ``before``). Warnings/infos: new ones plus any about
    a resource the change touches (``changed`` holds ``Resource.ref`` strings), so an apply
    reports the warnings of what it applied.
    """
    old = {_identity(m) for m in analyze_set(before, registry_hosts).messages()}
    touched = set(changed)
    out = Validation()
    for m in analyze_set(after, registry_hosts).messages():
        new = _identity(m) not in old
        if (m.level is Level.ERROR and new) or (
            m.level is not Level.ERROR and (new or m.resource in touched)
        ):
            out.add(m)
    return out


def render_errors(validation: Validation, what: str = "invalid config") -> str:
    """``meshbus: invalid config (2 errors):`` then one finding per line (the bad_request message)."""
    n = len(validation.errors)
    lines = "\n".join("  " + e.render() for e in validation.errors)
    return f"meshbus: {what} ({n} error{'s' if n != 1 else ''}):\n{lines}"
