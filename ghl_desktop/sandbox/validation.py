"""Validate every incoming request against HighLevel's published OpenAPI specs.

The sandbox exists so that a client which passes against it sends what the real API expects. The
specs (copied unmodified into ``openapi/``) are loaded with openapi-core with spec validation switched
off (the files are not strictly valid OpenAPI) and each request is validated as written, except for
the errata below: the ONE place where the sandbox departs from the published files, each entry naming
its evidence (see docs/highlevel-api.md in this repository, quoted as "docs/highlevel-api.md §n").

Two kinds of erratum:

* ``fix``     the spec is wrong and the live API accepts what the spec forbids; the request is valid.
* ``lenient`` the live API accepts the request although it breaks the spec, so the sandbox answers as
              HighLevel does, but the request is still recorded as a validation failure (a client should
              not rely on the leniency; the suite asserts zero failures).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict, MultiDict

if TYPE_CHECKING:
    from openapi_core import OpenAPI

# openapi-core (with jsonschema-path and openapi-spec-validator) is imported where it is used, not
# here: its import is ~0.3 s, and in sandbox mode it is what the window would wait for at start
# (SpecValidator.load_in_background builds the validator beside the start instead).

SPEC_DIR = Path(__file__).parent / "openapi"
#: The host the specs declare; requests are validated as if they had been sent there.
SPEC_HOST = "https://services.leadconnectorhq.com"
#: Version header values HighLevel publishes; any of them is accepted on the pre-v3 paths (docs/highlevel-api.md §0).
PUBLISHED_VERSIONS = ("2021-04-15", "2021-07-28", "2023-02-21", "v3")
#: Path prefix -> spec file.
SPEC_FILES = {
    "/oauth/": "oauth.json",
    "/conversations": "conversations.json",
    "/contacts": "contacts.json",
    "/locations": "locations.json",
}

Spec = dict[str, Any]


@dataclass(frozen=True)
class Erratum:
    """One documented departure from the published spec."""

    spec: str
    kind: str  # "fix" | "lenient"
    summary: str
    evidence: str
    apply: Callable[[Spec], None]


def _schema(spec: Spec, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"][name]
    return schema


def _direction_is_a_string(spec: Spec) -> None:
    prop = _schema(spec, "ProcessMessageBodyDto")["properties"]["direction"]
    prop.clear()
    prop.update({"type": "string", "enum": ["inbound", "outbound"], "default": "outbound",
                 "description": "Message direction; HighLevel defaults to outbound"})


def _contact_id_alone_works(spec: Spec) -> None:
    schema = _schema(spec, "ProcessMessageBodyDto")
    schema["required"] = [r for r in schema["required"] if r not in ("conversationId", "contactId")]
    schema["anyOf"] = [{"required": ["conversationId"]}, {"required": ["contactId"]}]


def _provider_id_not_enforced(spec: Spec) -> None:
    schema = _schema(spec, "ProcessMessageBodyDto")
    schema["required"] = [r for r in schema["required"] if r != "conversationProviderId"]


def _inbound_response_message_optional(spec: Spec) -> None:
    schema = _schema(spec, "ProcessMessageResponseDto")
    schema["required"] = [r for r in schema["required"] if r != "message"]


def _any_published_version(spec: Spec) -> None:
    for item in spec["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for param in operation.get("parameters", []):
                if param.get("in") == "header" and param.get("name") == "Version":
                    param["schema"] = {"type": "string", "enum": list(PUBLISHED_VERSIONS)}


ERRATA: tuple[Erratum, ...] = (
    Erratum("conversations.json", "fix",
            "ProcessMessageBodyDto.direction is a string 'inbound'|'outbound' (default outbound), not an object",
            "docs/highlevel-api.md §2.3/§2.4 (ISSUE #70, #107, #271 bodies send \"direction\":\"inbound\"); "
            "ghl-openapi/README.md", _direction_is_a_string),
    Erratum("conversations.json", "fix",
            "ProcessMessageBodyDto: conversationId is not required when contactId is given",
            "docs/highlevel-api.md §2.3 (HELP 155000007340; ISSUE #149, #169 comments, since 2025-08)",
            _contact_id_alone_works),
    Erratum("conversations.json", "lenient",
            "ProcessMessageBodyDto: a missing conversationProviderId is accepted (201, empty body, message "
            "dropped) instead of 422",
            "docs/highlevel-api.md §2.3 failure modes and §8.1 (ISSUE #70)", _provider_id_not_enforced),
    Erratum("conversations.json", "fix",
            "ProcessMessageResponseDto.message is optional",
            "ghl-openapi/README.md (live responses seen without it)", _inbound_response_message_optional),
    Erratum("*", "lenient",
            "Version header: every published version is accepted on the pre-v3 paths, not only the one the "
            "spec declares",
            "docs/highlevel-api.md §0 (GREEN sends 2021-07-28 on conversations; SDK 3.0 sends 2023-02-21 everywhere)",
            _any_published_version),
)


@dataclass
class ValidationOutcome:
    """What the spec says about one request."""

    operation: str | None  # "METHOD /path/{template}", None when no spec has the path
    errors: list[str] = field(default_factory=list)  # the request is refused (422)
    deviations: list[str] = field(default_factory=list)  # accepted like HighLevel does, but counted


class _SpecRequest:
    """openapi-core's Request protocol over already-read request parts."""

    def __init__(self, method: str, path: str, query: Mapping[str, str] | MultiDict[str],
                 headers: Mapping[str, str] | CIMultiDict[str], content_type: str, body: bytes | None) -> None:
        self.method = method.lower()
        self.path = path
        self.host_url = SPEC_HOST
        from openapi_core.datatypes import RequestParameters

        self.parameters = RequestParameters(query=MultiDict(query), header=CIMultiDict(headers), cookie={})
        self.content_type = content_type
        self.body = body


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template.rstrip("/") or "/")
    pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}/?$")


def _describe(exc: Exception) -> list[str]:
    """Turn an openapi-core error into NestJS-like one-line messages (HighLevel's 422 shape)."""
    cause = exc.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or getattr(exc, "schema_errors", None)
    prefix = ""
    name = getattr(exc, "name", None)
    if name:
        prefix = f"{name}: "
    if schema_errors:
        out = []
        for err in schema_errors:
            where = ".".join(str(p) for p in err.absolute_path)
            out.append(f"{prefix}{where + ' ' if where else ''}{err.message}".strip())
        return out
    text = str(exc)
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return [text]


_SHARED_LOCK = threading.Lock()
_SHARED: dict[type[SpecValidator], SpecValidator] = {}
_LOADING: set[type[SpecValidator]] = set()
_BUILD_LOCK = threading.Lock()
log = logging.getLogger("ghl.sandbox.validation")


class SpecValidator:
    """Holds one openapi-core app per spec file (with the errata applied) and validates requests."""

    def __init__(self, spec_dir: Path = SPEC_DIR) -> None:
        from openapi_core import Config, OpenAPI

        self._apps: dict[str, OpenAPI] = {}
        self._templates: dict[str, list[tuple[re.Pattern[str], str, str, Spec]]] = {}
        self._declared_versions: dict[str, list[str]] = {}
        for prefix, filename in SPEC_FILES.items():
            path = spec_dir / "apps" / filename
            spec = json.loads(path.read_text(encoding="utf-8"))  # a fresh parse: the errata may edit it
            self._remember_declared_versions(spec)  # before the errata: what HighLevel's spec declares
            for erratum in ERRATA:
                if erratum.spec in (filename, "*"):
                    erratum.apply(spec)
            self._apps[prefix] = OpenAPI.from_dict(spec, base_uri=path.as_uri(),
                                                   config=Config(spec_validator_cls=None))
            templates = []
            for template, item in spec["paths"].items():
                for method, op in item.items():
                    if isinstance(op, dict) and method in ("get", "post", "put", "delete", "patch"):
                        templates.append((_template_regex(template), method.upper(), template, op))
            # literal segments win over parameters, as in HighLevel's router
            templates.sort(key=lambda t: t[2].count("{"))
            self._templates[prefix] = templates

    @classmethod
    def load_in_background(cls) -> None:
        """Start building :meth:`shared` on a thread of its own, if nobody has yet: a sandbox starting
        in the app's process does not wait for it (requests wait, on their worker thread, in
        :meth:`shared`)."""
        with _SHARED_LOCK:
            if cls in _SHARED or cls in _LOADING:
                return
            _LOADING.add(cls)
        threading.Thread(target=cls._load, name="sandbox-spec-validator", daemon=True).start()

    @classmethod
    def _load(cls) -> None:
        try:
            cls.shared()
        except Exception:  # the first request builds it again and meets the error there
            log.exception("building the sandbox's OpenAPI validator failed")
        finally:
            with _SHARED_LOCK:
                _LOADING.discard(cls)

    @classmethod
    def shared(cls) -> SpecValidator:
        """The process's one validator for the bundled specs. Building one parses four OpenAPI files
        (tens of ms, on the event loop when a sandbox starts); it holds no per-sandbox state, so every
        sandbox of the process shares it. A caller while it is being built waits for that build."""
        built = _SHARED.get(cls)
        if built is not None:
            return built
        with _BUILD_LOCK:  # one build; _SHARED_LOCK is only ever held for a lookup
            built = _SHARED.get(cls)
            if built is None:
                built = cls()
                with _SHARED_LOCK:
                    _SHARED[cls] = built
            return built

    def _remember_declared_versions(self, spec: Spec) -> None:
        for template, item in spec["paths"].items():
            for method, op in item.items():
                if not isinstance(op, dict):
                    continue
                for param in op.get("parameters", []):
                    if param.get("in") == "header" and param.get("name") == "Version":
                        enum = param.get("schema", {}).get("enum") or []
                        self._declared_versions[f"{method.upper()} {template}"] = list(enum)

    def _prefix(self, path: str) -> str | None:
        for prefix in SPEC_FILES:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return prefix
        return None

    def find_operation(self, method: str, path: str) -> str | None:
        """'METHOD /template' of the spec operation a request hits, or None."""
        prefix = self._prefix(path)
        if prefix is None:
            return None
        for regex, op_method, template, _ in self._templates[prefix]:
            if op_method == method.upper() and regex.match(path):
                return f"{op_method} {template}"
        return None

    def path_known(self, path: str) -> bool:
        prefix = self._prefix(path)
        return prefix is not None and any(regex.match(path) for regex, *_ in self._templates[prefix])

    def declared_versions(self, operation: str) -> list[str]:
        return self._declared_versions.get(operation, [])

    def validate(self, method: str, path: str, query: Mapping[str, str] | MultiDict[str],
                 headers: Mapping[str, str] | CIMultiDict[str], content_type: str,
                 body: bytes | None) -> ValidationOutcome:
        operation = self.find_operation(method, path)
        outcome = ValidationOutcome(operation=operation)
        prefix = self._prefix(path)
        if operation is None or prefix is None:
            outcome.errors.append(f"Cannot {method.upper()} {path}: no such operation in the HighLevel spec")
            return outcome
        request = _SpecRequest(method, path, query, headers, content_type, body or None)
        for exc in self._apps[prefix].request_validator.iter_errors(request):
            outcome.errors.extend(_describe(exc))
        if outcome.errors:
            return outcome
        version = CIMultiDict(headers).get("Version")
        declared = self.declared_versions(operation)
        if version is not None and declared and version not in declared:
            outcome.deviations.append(
                f"Version {version} is accepted by HighLevel but the spec declares {', '.join(declared)} "
                f"for {operation}")
        if operation == "POST /conversations/messages/inbound" and body:
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            if isinstance(payload, dict) and not payload.get("conversationProviderId"):
                outcome.deviations.append(
                    "conversationProviderId is required by the spec; HighLevel drops such a message (201, empty)")
        return outcome
