"""Checking loaded documents and turning them into typed ``Manifests``.

Called by every command through ``validate(paths)``. The only module that imports
``jsonschema``. Two passes: the JSON Schemas in ``schemas/`` (the one source of truth for
field shapes, shared with editors), then the cross-checks a schema cannot express
(unique names, connection references, secrets from the environment, cron and timezone,
files that must exist). Every problem is collected with its file, line and key, so a user
fixes them all in one go; nothing is raised until the end.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from controller import durations, loading, policies, prechecks
from controller.errors import ManifestError, Problem
from controller.loading import Document, KeyPath, dotted
from controller.manifests import (
    API_VERSION,
    SANDBOX_URL,
    Api,
    BackupPolicy,
    CommvaultDynamoDBSource,
    Connection,
    ElementApplicationSource,
    Kind,
    Lifecycle,
    Manifests,
    Retention,
    RoleApp,
    SourceLocation,
    Tls,
    UnsetSecret,
    VcdaApplianceSource,
)

if TYPE_CHECKING:
    import jsonschema

SCHEMA_FILES = {
    Kind.CONNECTION: "connection.schema.json",
    Kind.ROLEAPP: "roleapp.schema.json",
    Kind.BACKUP_POLICY: "backuppolicy.schema.json",
}
SOURCE_APIS = {
    "elementApplication": Api.ELEMENT,
    "vcdaAppliance": Api.VCDA,
    "commvaultDynamoDB": Api.COMMVAULT,
}
# Fields that carry secrets: they must be ${VAR} references so no secret is ever committed.
SECRET_PATHS: dict[Kind, tuple[tuple[str, ...], ...]] = {
    Kind.CONNECTION: (
        ("spec", "auth", "password"),
        ("spec", "auth", "clientSecret"),
        ("spec", "auth", "token"),
    ),
    Kind.BACKUP_POLICY: (("spec", "source", "vcdaAppliance", "password"),),
}
ROLEAPP_FIELDS = ("folder", "title", "roles", "svcscriptcode", "opts")
_NO_LIFECYCLE = Lifecycle()  # frozen, so one serves every roleapp that declares none
# The (connection, name) sort key in C: 10,000 roleapps sort in 4 ms, 11 with a lambda.
_BY_CONNECTION_AND_NAME = operator.attrgetter("connection", "name")
# Kind by its value: calling Kind(value) goes through EnumType.__call__, ~1 us a document.
_KINDS: dict[str, Kind] = {kind.value: kind for kind in Kind}


def schemas_dir() -> Path:
    # The package carries a link to the top-level schemas/ folder, so both an editable
    # install and a built wheel find them here.
    return Path(__file__).resolve().parent / "schemas"


@cache
def _schema(kind: Kind) -> dict[str, Any]:
    return json.loads((schemas_dir() / SCHEMA_FILES[kind]).read_text(encoding="utf-8"))


@cache
def _precheck(kind: Kind) -> prechecks.Check:
    return prechecks.compile_schema(_schema(kind))


@cache
def _validator(kind: Kind) -> jsonschema.Draft202012Validator:
    # Imported on first need: a valid estate passes the prechecks and never needs it.
    import jsonschema

    return jsonschema.Draft202012Validator(_schema(kind))


def validate(
    paths: Iterable[str | Path],
    *,
    environ: Mapping[str, str] | None = None,
    freeze: bool = False,
) -> Manifests:
    """Load and check every manifest under ``paths``; ManifestError lists every problem.

    ``freeze``: as ``loading.load``'s, for the CLI's own process only.
    """
    result = loading.load(paths, environ=environ, freeze=freeze)
    problems = list(result.problems)
    by_kind: dict[Kind, list[Document]] = {kind: [] for kind in Kind}
    unset_secrets: list[UnsetSecret] = []
    for document in result.documents:
        kind = _check_document(document, problems, unset_secrets)
        if kind is not None:
            by_kind[kind].append(document)
    if not result.documents and not problems:
        problems.append(Problem(", ".join(map(str, paths)) or ".", 0, "", "no manifests found"))
    declared = _declared_connections(result.documents)
    manifests = _build(by_kind, problems, declared=declared, documents=len(result.documents))
    if problems:
        raise ManifestError(sorted(set(problems)))
    return msgspec.structs.replace(manifests, unset_secrets=tuple(unset_secrets))


def _check_document(
    document: Document, problems: list[Problem], unset_secrets: list[UnsetSecret]
) -> Kind | None:
    """Schema-check one document; its Kind when it is fit to build."""
    data = document.data
    if not isinstance(data, dict):
        problems.append(
            Problem(
                document.file,
                document.line,
                "",
                f"a manifest must be a mapping, got {_type_name(data)}",
            )
        )
        return None
    kind_value = data.get("kind")
    kind = _KINDS.get(kind_value) if isinstance(kind_value, str) else None
    if kind is None:
        known = ", ".join(k.value for k in Kind)
        if kind_value is None:
            message = "required"
        elif isinstance(kind_value, str):
            message = f"unknown kind {kind_value!r} (expected one of {known})"
        else:
            message = f"must be one of {known}, got {_type_name(kind_value)}"
        problems.append(Problem(document.file, document.line_of(("kind",)), "kind", message))
        return None
    before = len(problems)
    secret_paths = SECRET_PATHS.get(kind, ())
    for path, variable in document.unset.items():
        if path in secret_paths:
            unset_secrets.append(
                UnsetSecret(
                    kind=kind,
                    name=_name(data),
                    key=dotted(path),
                    variable=variable,
                    source=SourceLocation(document.file, document.line_of(path)),
                )
            )
        else:
            problems.append(
                Problem(
                    document.file,
                    document.line_of(path),
                    dotted(path),
                    f"environment variable {variable} is not set",
                )
            )
    # The precheck proves most documents valid at a fraction of jsonschema's cost; the rest
    # go through jsonschema, which finds and words their errors.
    # Both judge the same data: an unset secret stood in for (see _secrets_stood_in).
    checked = _secrets_stood_in(data, document, secret_paths=secret_paths)
    schema_errors = () if _precheck(kind)(checked) else _validator(kind).iter_errors(checked)
    for error in schema_errors:
        if _bare_zero_duration(error):
            continue
        path = tuple(error.absolute_path)
        if path in document.unset or path in document.refused:
            # The value is a stand-in, for an unset variable (reported above or, for a
            # secret, needed only when used) or for a value loading refused and reported:
            # its shape says nothing more about the user's file.
            continue
        problems.extend(_schema_problems(document, error))
    for path in secret_paths:
        if _has(data, path) and path not in document.from_env:
            problems.append(
                Problem(
                    document.file,
                    document.line_of(path),
                    dotted(path),
                    "a secret must be an environment reference such as ${VAR} (with no default),"
                    " never a literal",
                )
            )
    # A refused value was reported by loading: the document is not fit to build either.
    return kind if len(problems) == before and not document.refused else None


def _bare_zero_duration(error: jsonschema.ValidationError) -> bool:
    """``wait: 0`` ("0: don't wait", manifests.md) is a YAML integer; the schema wants "0"."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    return (
        error.validator == "type"
        and type(error.instance) is int
        and error.instance == 0
        and str(schema.get("pattern", "")).startswith("^(0|")
    )


def _schema_problems(document: Document, error: jsonschema.ValidationError) -> list[Problem]:
    path: KeyPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    validator = error.validator
    # The stubs allow jsonschema's "unset" for these; an error from iter_errors has both.
    value: Any = error.validator_value
    instance: Any = error.instance

    def at(key_path: KeyPath, message: str) -> Problem:
        return Problem(document.file, document.line_of(key_path), dotted(key_path), message)

    if validator == "required":
        present = instance if isinstance(instance, dict) else {}
        return [at((*path, key), "required") for key in value if key not in present]
    if validator == "additionalProperties":
        known = set(schema.get("properties", {}))
        return [at((*path, key), "unknown key") for key in instance if key not in known]
    if validator == "not" and "attachment_info" in json.dumps(value):
        if not isinstance(instance, dict):
            return []  # `required` holds vacuously for a non-mapping; its type error says why
        return [at((*path, "attachment_info"), "owned by the server; remove it")]
    # A mapping's or list's x-message speaks of its content ("needs exactly one of ..."):
    # when the value is not even a mapping or a list, say that instead.
    structural = validator == "type" and value in ("object", "array")
    message = (not structural and schema.get("x-message")) or _message(error)
    return [at(path, message)]


def _message(error: jsonschema.ValidationError) -> str:
    value: Any = error.validator_value  # set, as in _schema_problems
    match error.validator:
        case "type":
            return f"must be {_article(value)}, got {_type_name(error.instance)}"
        case "enum":
            return "must be one of " + ", ".join(str(v) for v in value)
        case "const":
            return f"must be {value}"
        case "minLength":
            return "must not be empty"
        case "minimum":
            return f"must be at least {value}"
        case "maximum":
            return f"must be at most {value}"
        case "exclusiveMinimum":
            return f"must be greater than {value}"
        case "uniqueItems":
            return "must not repeat items"
        case "minProperties":
            return "must not be empty"
        case "pattern":
            return f"must match {value}"
    return error.message


def _article(type_name: str | list[str]) -> str:
    if isinstance(type_name, list):
        return " or ".join(_article(t) for t in type_name)
    words = {
        "object": "a mapping",
        "array": "a list",
        "integer": "an integer",
        "string": "a string",
    }
    return words.get(type_name, f"a {type_name}")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _name(data: dict[str, Any]) -> str:
    """``metadata.name`` of a document not yet known to be valid, or ""."""
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


# What an unset secret is checked as: any non-empty text, as a set variable would be.
_SECRET_STAND_IN = "${UNSET}"


def _secrets_stood_in(
    data: dict[str, Any], document: Document, *, secret_paths: tuple[tuple[str, ...], ...]
) -> dict[str, Any]:
    """``data`` for the schema checks, each unset secret (loaded as "") stood in for.

    Why: `validate` in a pull request usually runs without the secrets, and "" fails a
    secret's ``minLength``: the precheck would send every Connection to jsonschema (~75 ms
    to import) for errors that say nothing of the file. Both checks see the stand-in, so a
    schema rule that looked at a secret's value would judge it alike in either. The copy is
    made only along those paths; ``data`` itself is never changed.
    """
    unset = [path for path in secret_paths if path in document.unset]
    if not unset:
        return data
    copy = dict(data)
    for path in unset:
        node = copy
        for key in path[:-1]:
            node[key] = node = dict(node[key])
        node[path[-1]] = _SECRET_STAND_IN
    return copy


def _has(data: Any, path: KeyPath) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def _declared_connections(documents: Iterable[Document]) -> dict[str, str]:
    """Name → api of every Connection document, valid or not.

    Why: a Connection with a typo is reported once, at its own line; the documents that
    reference it must not each add an "unknown connection" error on top.
    """
    declared: dict[str, str] = {}
    for document in documents:
        data = document.data
        if not isinstance(data, dict) or data.get("kind") != Kind.CONNECTION:
            continue
        metadata = data.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        spec = data.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        if isinstance(metadata.get("name"), str):
            declared.setdefault(metadata["name"], str(spec.get("api", "")))
    return declared


def _build(
    by_kind: dict[Kind, list[Document]],
    problems: list[Problem],
    *,
    declared: dict[str, str],
    documents: int,
) -> Manifests:
    checks = _CrossChecks(problems, declared)
    connections = checks.connections(by_kind[Kind.CONNECTION])
    roleapps = checks.roleapps(by_kind[Kind.ROLEAPP], connections)
    policies_ = checks.policies(by_kind[Kind.BACKUP_POLICY], connections)
    return Manifests(
        connections=tuple(sorted(connections.values(), key=lambda c: c.name)),
        roleapps=tuple(sorted(roleapps, key=_BY_CONNECTION_AND_NAME)),
        policies=tuple(sorted(policies_, key=lambda p: (p.connection, p.name))),
        documents=documents,
    )


class _CrossChecks:
    """What the schemas cannot say: references between documents, files, clocks, secrets."""

    def __init__(self, problems: list[Problem], declared: dict[str, str]) -> None:
        self.problems = problems
        self.declared = declared  # every Connection document, even an invalid one
        self._of_api: dict[str, list[str]] = {}

    def problem(self, document: Document, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(document.file, document.line_of(path), dotted(path), message))

    def unique(self, documents: list[Document]) -> list[Document]:
        seen: dict[tuple[str | None, str], Document] = {}
        return [document for document in documents if self.first(seen, document)]

    def first(
        self,
        seen: dict[tuple[str | None, str], Document],
        document: Document,
        *,
        scope: str | None = None,
    ) -> bool:
        """Whether ``document``'s name is new in ``seen`` (within ``scope``); else a problem."""
        key = (scope, document.data["metadata"]["name"])
        if key not in seen:
            seen[key] = document
            return True
        first = seen[key]
        self.problem(
            document,
            ("metadata", "name"),
            f"duplicate name {key[1]!r} (first declared at "
            f"{first.file}:{first.line_of(('metadata', 'name'))})",
        )
        return False

    def connections(self, documents: list[Document]) -> dict[str, Connection]:
        result: dict[str, Connection] = {}
        for document in self.unique(documents):
            spec = document.data["spec"]
            url = spec["url"]
            if url != SANDBOX_URL and not url.startswith(("http://", "https://")):
                self.problem(
                    document, ("spec", "url"), "must be an http:// or https:// URL, or sandbox"
                )
            if url != SANDBOX_URL and "auth" not in spec:
                self.problem(document, ("spec", "auth"), "required unless url is sandbox")
            tls = spec.get("tls", {})
            ca_file = self.existing_path(document, ("spec", "tls", "caFile"), tls.get("caFile"))
            name = document.data["metadata"]["name"]
            result[name] = Connection(
                name=name,
                api=Api(spec["api"]),
                url=url.rstrip("/"),
                auth={k: str(v) for k, v in spec.get("auth", {}).items()},
                timeout=durations.parse(spec.get("timeout", "30s")),
                concurrency=spec.get("concurrency", 8),
                rate_limit=spec.get("rateLimit"),
                tls=Tls(verify=tls.get("verify", True), ca_file=str(ca_file) if ca_file else None),
                labels=document.data["metadata"].get("labels", {}),
                source=_location(document),
            )
        return result

    def existing_path(self, document: Document, path: KeyPath, value: str | None) -> Path | None:
        if value is None:
            return None
        try:
            resolved = (document.path.parent / value).resolve()
            exists = resolved.exists()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, name too long, loop
            self.problem(document, path, f"not a usable path: {_path_error(exc)}")
            return None
        if not exists:
            shown = _printable(value)
            self.problem(document, path, f"{shown} does not exist (relative to {document.file})")
            return None
        return resolved

    def declared_of(self, api: Api) -> list[str]:
        """The declared connections with ``api``, sorted; not to be modified.

        Computed once per api: every document that leaves out ``spec.connection`` asks (in
        an estate with one Era connection, likely all 10,000 roleapps: ~10 ms of CPU).
        """
        names = self._of_api.get(api)
        if names is None:
            names = self._of_api[api] = sorted(n for n, a in self.declared.items() if a == api)
        return names

    def resolve_connection(
        self, document: Document, api: Api, connections: dict[str, Connection], *, what: str
    ) -> str | None:
        name = document.data["spec"].get("connection")
        if name is None:
            candidates = self.declared_of(api)
            if len(candidates) == 1:
                return candidates[0] if candidates[0] in connections else None
            if not candidates:
                self.problem(
                    document,
                    ("spec",),
                    f"{what} needs a Connection with api: {api}; none is declared",
                )
            else:
                self.problem(
                    document,
                    ("spec", "connection"),
                    f"required: several {api} connections exist ({', '.join(candidates)})",
                )
            return None
        connection = connections.get(name)
        if connection is None:
            if name not in self.declared:  # a declared but invalid one has its own errors
                self.problem(document, ("spec", "connection"), f"unknown connection {name!r}")
            return None
        if connection.api != api:
            self.problem(
                document,
                ("spec", "connection"),
                f"connection {name!r} has api {connection.api}; {what} needs api {api}",
            )
            return None
        return name

    def roleapps(
        self, documents: list[Document], connections: dict[str, Connection]
    ) -> list[RoleApp]:
        # One pass over the documents (resolve, deduplicate, build) rather than one for each:
        # at 10,000 roleapps every pass over cold documents costs ~10 ms. The order of the
        # problems does not matter: validate sorts them.
        seen: dict[tuple[str | None, str], Document] = {}
        result = []
        for document in documents:
            connection = self.resolve_connection(document, Api.ERA, connections, what="a RoleApp")
            if connection is None:
                continue
            spec = document.data["spec"]
            metadata = document.data["metadata"]
            if not self.first(seen, document, scope=connection):
                continue
            lifecycle = spec.get("lifecycle", {})
            for i, field in enumerate(lifecycle.get("ignoreFields", [])):
                if field.split(".")[0] not in ROLEAPP_FIELDS:
                    self.problem(
                        document,
                        ("spec", "lifecycle", "ignoreFields", i),
                        f"unknown field {field!r} "
                        f"(one of {', '.join(ROLEAPP_FIELDS)}, or opts.<key>)",
                    )
            archive = self.existing_path(document, ("spec", "archive"), spec.get("archive"))
            if archive is not None and archive.is_file():
                if archive.suffix.lower() != ".zip":
                    self.problem(
                        document, ("spec", "archive"), "must be a .zip file or a directory"
                    )
                elif not _is_zip(archive):  # else apply would upload it to Era as is
                    name = _printable(spec["archive"])
                    self.problem(document, ("spec", "archive"), f"{name} is not a zip archive")
            result.append(
                RoleApp(
                    name=metadata["name"],
                    connection=connection,
                    fields={k: spec[k] for k in ROLEAPP_FIELDS if k in spec},
                    id=spec.get("id", "").lower() or None,
                    archive=str(archive) if archive else None,
                    lifecycle=Lifecycle(
                        prevent_destroy=lifecycle.get("preventDestroy", False),
                        ignore_fields=tuple(lifecycle.get("ignoreFields", ())),
                    )
                    if lifecycle
                    else _NO_LIFECYCLE,
                    labels=metadata.get("labels", {}),
                    source=_location(document),
                )
            )
        return result

    def policies(
        self, documents: list[Document], connections: dict[str, Connection]
    ) -> list[BackupPolicy]:
        result = []
        for document in self.unique(documents):
            spec = document.data["spec"]
            ((source_key, source),) = spec["source"].items()
            api = SOURCE_APIS[source_key]
            name = spec.get("connection")
            connection: str | None = None
            if name is not None and name in connections and connections[name].api != api:
                self.problem(
                    document,
                    ("spec", "source", source_key),
                    f"{source_key} needs a connection with api {api}; "
                    f"{name!r} has api {connections[name].api}",
                )
            else:
                connection = self.resolve_connection(
                    document, api, connections, what=f"a {source_key} policy"
                )
            if "schedule" not in spec and "maxAge" not in spec:
                self.problem(document, ("spec",), "needs schedule, maxAge or both")
            if "retention" in spec and api == Api.COMMVAULT:
                self.problem(
                    document,
                    ("spec", "retention"),
                    "not supported for commvault (Commvault applies its own retention)",
                )
            timezone = spec.get("timezone", "UTC")
            if not _valid_timezone(timezone):
                self.problem(document, ("spec", "timezone"), f"unknown IANA timezone {timezone!r}")
            if "schedule" in spec and not _valid_schedule(spec["schedule"]):
                self.problem(
                    document,
                    ("spec", "schedule"),
                    f"invalid cron expression {spec['schedule']!r} (minute hour day month weekday)",
                )
            elif "schedule" in spec and not policies.schedule_fires(spec["schedule"]):
                self.problem(
                    document,
                    ("spec", "schedule"),
                    f"{spec['schedule']!r} never fires: no date matches it (such as 30 February)",
                )
            if connection is None:
                continue
            retention = spec.get("retention")
            result.append(
                BackupPolicy(
                    name=document.data["metadata"]["name"],
                    connection=connection,
                    source=_source(source_key, source),
                    schedule=spec.get("schedule"),
                    timezone=timezone,
                    max_age=durations.parse(spec["maxAge"]) if "maxAge" in spec else None,
                    retention=Retention(
                        keep_last=retention.get("keepLast"),
                        max_age=durations.parse(retention["maxAge"])
                        if "maxAge" in retention
                        else None,
                    )
                    if retention
                    else None,
                    wait=durations.parse(spec.get("wait", "2h")),
                    suspend=spec.get("suspend", False),
                    labels=document.data["metadata"].get("labels", {}),
                    source_location=_location(document),
                )
            )
        return result


def _source(key: str, source: dict[str, Any]) -> Any:
    if key == "elementApplication":
        return ElementApplicationSource(
            application_id=source["applicationId"].lower(),
            include_users=source.get("includeUsers", True),
            include_binary_data=source.get("includeBinaryData", True),
            include_collaboration_registration_data=source.get(
                "includeCollaborationRegistrationData", False
            ),
            description=source.get("description", ""),
        )
    if key == "vcdaAppliance":
        return VcdaApplianceSource(password=source["password"])
    return CommvaultDynamoDBSource(
        client_name=source["clientName"],
        instance_name=source["instanceName"],
        subclient_id=source["subclientId"],
        backupset_name=source.get("backupsetName", "defaultBackupSet"),
        subclient_name=source.get("subclientName", ""),
        backup_level=source.get("backupLevel", "INCREMENTAL"),
    )


def _printable(text: str) -> str:
    """``text``, quoted when a line break or control character would garble its error line."""
    return text if text.isprintable() else repr(text)


def _path_error(exc: Exception) -> str:
    if isinstance(exc, RuntimeError):  # Path.resolve() on Python 3.11; its text holds the path
        return "symbolic link loop"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _is_zip(path: Path) -> bool:
    import zipfile  # here: ~5 ms of start-up that only manifests with a .zip archive need

    return zipfile.is_zipfile(path)


def _valid_schedule(expression: str) -> bool:
    # croniter also takes a 6th (seconds, last) and a 7th (year) field, so a Quartz-style
    # "0 0 2 * * *" (seconds first: 02:00 daily) would quietly mean 00:00 on the 2nd of
    # each month. manifests.md promises five fields.
    if not expression.startswith("@") and len(expression.split()) != 5:
        return False
    return policies.is_valid_schedule(expression)


def _valid_timezone(name: str) -> bool:
    import zoneinfo  # ~3 ms of start-up, for estates that name a timezone only

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe", a dir
        return False
    return True


def _location(document: Document) -> SourceLocation:
    return SourceLocation(document.file, document.line)


def summary(manifests: Manifests) -> str:
    """``7 documents — 2 connections, 4 roleapps, 1 backup policy``."""

    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    return (
        f"{count(manifests.documents, 'document', 'documents')} — "
        f"{count(len(manifests.connections), 'connection', 'connections')}, "
        f"{count(len(manifests.roleapps), 'roleapp', 'roleapps')}, "
        f"{count(len(manifests.policies), 'backup policy', 'backup policies')}"
    )


__all__ = ["API_VERSION", "summary", "validate"]
