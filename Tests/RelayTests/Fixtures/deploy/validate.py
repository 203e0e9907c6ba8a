#!/usr/bin/env python3
"""Offline validation of everything under deploy/ that Kustomize builds.

Runs `kubectl kustomize` on every directory under deploy/ that holds a kustomization file
(the bases, their secret templates, the overlays and the Flux examples) and validates every
rendered object against a schema, without any network access:

- Kubernetes built-in kinds: the JSON Schemas shipped inside the PyPI package
  kubernetes-validate, in strict mode (unknown fields are errors), for one fixed Kubernetes
  version (--kubernetes-version, default below).
- Flux custom resources (OCIRepository, ExternalArtifact, Kustomization, Provider, Alert,
  Receiver), which those schemas do not cover: the small JSON Schemas in FLUX_SCHEMAS below,
  written from the fields the project's README and deploy/examples use, checked with
  jsonschema. Any other *.toolkit.fluxcd.io kind, or a kind with no schema at all, is an
  error: nothing is let through unvalidated.

Prints one JSON report on stdout, {"directories": N, "objects": N, "errors": [...]}, and
exits 1 when there is any error (0 otherwise). Paths in the report are relative to the
parent of the deploy directory.

Needs: kubectl (its built-in kustomize), and in the Python environment kubernetes-validate
(pip install kubernetes-validate==1.37.0; it brings jsonschema and PyYAML).

    python validate.py                          # the repository's deploy/
    python validate.py --deploy /some/copy/deploy --kubernetes-version 1.33
    python validate.py --file rendered.yaml     # also validate already-rendered manifests
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_KUBERNETES_VERSION = "1.32"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
FLUX_GROUP_SUFFIX = ".toolkit.fluxcd.io"

# --- Flux schemas ---------------------------------------------------------------------------
# Written for this project from the Flux API fields its README and deploy/examples use (plus
# the other spec fields of the same API versions, so a valid manifest is not refused); spec
# objects reject unknown fields, so a misspelt field is caught.

DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
DNS_SUBDOMAIN = {"type": "string", "minLength": 1, "maxLength": 253,
                 "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
DNS_LABEL = {"type": "string", "minLength": 1, "maxLength": 63,
             "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LOCAL_REF = {"type": "object", "required": ["name"], "additionalProperties": False,
             "properties": {"name": {"type": "string", "minLength": 1}}}
CROSS_NAMESPACE_REF = {
    "type": "object", "required": ["kind", "name"], "additionalProperties": False,
    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string", "minLength": 1},
                   "name": {"type": "string", "minLength": 1, "maxLength": 253},
                   "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
                   "matchLabels": STRING_MAP},
}
METADATA = {
    "type": "object", "required": ["name", "namespace"],
    "properties": {"name": DNS_SUBDOMAIN, "namespace": DNS_LABEL, "labels": STRING_MAP,
                   "annotations": STRING_MAP},
}


def flux_object(api_version: str, kind: str, spec: dict, spec_required: bool = True) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{kind} ({api_version})",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"] + (["spec"] if spec_required else []),
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
            "status": {"type": "object"},
        },
    }


def spec_schema(required: list[str], properties: dict) -> dict:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


OCI_REPOSITORY = flux_object("source.toolkit.fluxcd.io/v1", "OCIRepository", spec_schema(
    ["url", "interval"], {
        "url": {"type": "string", "pattern": r"^oci://.+$"},
        "interval": DURATION,
        "timeout": DURATION,
        "insecure": {"type": "boolean"},
        "suspend": {"type": "boolean"},
        "ref": {"type": "object", "additionalProperties": False, "properties": {
            "tag": {"type": "string", "minLength": 1}, "semver": {"type": "string", "minLength": 1},
            "semverFilter": {"type": "string"},
            "digest": {"type": "string", "pattern": r"^sha256:[a-f0-9]{64}$"}}},
        "layerSelector": {"type": "object", "additionalProperties": False, "properties": {
            "mediaType": {"type": "string"}, "operation": {"enum": ["extract", "copy"]}}},
        "provider": {"enum": ["generic", "aws", "azure", "gcp"]},
        "secretRef": LOCAL_REF,
        "certSecretRef": LOCAL_REF,
        "proxySecretRef": LOCAL_REF,
        "serviceAccountName": {"type": "string"},
        "ignore": {"type": "string"},
        "verify": {"type": "object", "required": ["provider"], "additionalProperties": False, "properties": {
            "provider": {"enum": ["cosign", "notation"]},
            "secretRef": LOCAL_REF,
            "matchOIDCIdentity": {"type": "array", "items": {
                "type": "object", "required": ["issuer", "subject"], "additionalProperties": False,
                "properties": {"issuer": {"type": "string"}, "subject": {"type": "string"}}}}}},
    }))

# The agent creates these (spec.sourceRef optional); examples never write one, but a manifest
# that does is still checked.
EXTERNAL_ARTIFACT = flux_object("source.toolkit.fluxcd.io/v1", "ExternalArtifact", spec_schema(
    [], {"sourceRef": CROSS_NAMESPACE_REF}), spec_required=False)

KUSTOMIZATION = flux_object("kustomize.toolkit.fluxcd.io/v1", "Kustomization", spec_schema(
    ["interval", "prune", "sourceRef"], {
        "interval": DURATION,
        "retryInterval": DURATION,
        "timeout": DURATION,
        "path": {"type": "string"},
        "prune": {"type": "boolean"},
        "wait": {"type": "boolean"},
        "force": {"type": "boolean"},
        "suspend": {"type": "boolean"},
        "sourceRef": {
            "type": "object", "required": ["kind", "name"], "additionalProperties": False,
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"enum": ["OCIRepository", "GitRepository", "Bucket", "ExternalArtifact"]},
                "name": {"type": "string", "minLength": 1},
                "namespace": {"type": "string", "minLength": 1}}},
        "targetNamespace": {"type": "string", "maxLength": 63},
        "serviceAccountName": {"type": "string"},
        "namePrefix": {"type": "string"},
        "nameSuffix": {"type": "string"},
        "deletionPolicy": {"enum": ["MirrorPrune", "Delete", "WaitForTermination", "Orphan"]},
        "dependsOn": {"type": "array", "items": CROSS_NAMESPACE_REF},
        "components": {"type": "array", "items": {"type": "string"}},
        "ignoreMissingComponents": {"type": "boolean"},
        "patches": {"type": "array", "items": {"type": "object", "required": ["patch"]}},
        "images": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "healthChecks": {"type": "array", "items": CROSS_NAMESPACE_REF},
        "healthCheckExprs": {"type": "array", "items": {"type": "object"}},
        "commonMetadata": {"type": "object"},
        "decryption": {"type": "object"},
        "kubeConfig": {"type": "object"},
        "postBuild": {"type": "object"},
    }))

PROVIDER = flux_object("notification.toolkit.fluxcd.io/v1beta3", "Provider", spec_schema(
    ["type"], {
        "type": {"type": "string", "minLength": 1},
        "address": {"type": "string", "pattern": r"^(https?|nats)://.+$"},
        "channel": {"type": "string"},
        "username": {"type": "string"},
        "timeout": DURATION,
        "interval": DURATION,
        "proxy": {"type": "string"},
        "secretRef": LOCAL_REF,
        "certSecretRef": LOCAL_REF,
        "serviceAccountName": {"type": "string"},
        "commitStatusExpr": {"type": "string"},
        "suspend": {"type": "boolean"},
    }))

ALERT = flux_object("notification.toolkit.fluxcd.io/v1beta3", "Alert", spec_schema(
    ["providerRef", "eventSources"], {
        "providerRef": LOCAL_REF,
        "eventSeverity": {"enum": ["info", "error"]},
        "eventSources": {"type": "array", "minItems": 1, "items": CROSS_NAMESPACE_REF},
        "eventMetadata": STRING_MAP,
        "inclusionList": {"type": "array", "items": {"type": "string"}},
        "exclusionList": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
        "suspend": {"type": "boolean"},
    }))

RECEIVER = flux_object("notification.toolkit.fluxcd.io/v1", "Receiver", spec_schema(
    ["type", "resources", "secretRef"], {
        "type": {"enum": ["generic", "generic-hmac", "github", "gitlab", "bitbucket", "harbor",
                          "dockerhub", "quay", "gcr", "nexus", "acr", "cdevents"]},
        "interval": DURATION,
        "events": {"type": "array", "items": {"type": "string"}},
        "resources": {"type": "array", "minItems": 1, "items": CROSS_NAMESPACE_REF},
        "resourceFilter": {"type": "string"},
        "secretRef": LOCAL_REF,
        "suspend": {"type": "boolean"},
    }))

HELM_REPOSITORY = flux_object("source.toolkit.fluxcd.io/v1", "HelmRepository", spec_schema(
    ["url"], {
        "url": {"type": "string", "pattern": r"^(https?|oci)://.+$"},
        "type": {"enum": ["default", "oci"]},
        "interval": DURATION,
        "timeout": DURATION,
        "insecure": {"type": "boolean"},
        "suspend": {"type": "boolean"},
        "provider": {"enum": ["generic", "aws", "azure", "gcp"]},
        "secretRef": LOCAL_REF,
        "certSecretRef": LOCAL_REF,
        "passCredentials": {"type": "boolean"},
        "accessFrom": {"type": "object"},
    }))

CHART_SOURCE_REF = {
    "type": "object", "required": ["kind", "name"], "additionalProperties": False,
    "properties": {"apiVersion": {"type": "string"},
                   "kind": {"enum": ["HelmRepository", "GitRepository", "Bucket"]},
                   "name": {"type": "string", "minLength": 1}, "namespace": {"type": "string", "minLength": 1}}}

HELM_RELEASE = flux_object("helm.toolkit.fluxcd.io/v2", "HelmRelease", {
    "type": "object", "required": ["interval"], "additionalProperties": False,
    # Exactly one of chart and chartRef.
    "oneOf": [{"required": ["chart"]}, {"required": ["chartRef"]}],
    "properties": {
        "interval": DURATION,
        "timeout": DURATION,
        "suspend": {"type": "boolean"},
        "releaseName": {"type": "string"},
        "targetNamespace": {"type": "string", "maxLength": 63},
        "storageNamespace": {"type": "string", "maxLength": 63},
        "serviceAccountName": {"type": "string"},
        "chart": {"type": "object", "required": ["spec"], "additionalProperties": False, "properties": {
            "metadata": {"type": "object"},
            "spec": {"type": "object", "required": ["chart", "sourceRef"], "additionalProperties": False, "properties": {
                "chart": {"type": "string", "minLength": 1},
                "version": {"type": "string"},
                "sourceRef": CHART_SOURCE_REF,
                "interval": DURATION,
                "reconcileStrategy": {"enum": ["ChartVersion", "Revision"]},
                "valuesFiles": {"type": "array", "items": {"type": "string"}},
                "ignoreMissingValuesFiles": {"type": "boolean"},
                "verify": {"type": "object"}}}}},
        "chartRef": {"type": "object", "required": ["kind", "name"], "additionalProperties": False, "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"enum": ["OCIRepository", "HelmChart", "ExternalArtifact"]},
            "name": {"type": "string", "minLength": 1},
            "namespace": {"type": "string", "minLength": 1}}},
        "install": {"type": "object"},
        "upgrade": {"type": "object"},
        "test": {"type": "object"},
        "rollback": {"type": "object"},
        "uninstall": {"type": "object"},
        "values": {"type": "object"},
        "valuesFrom": {"type": "array", "items": {"type": "object"}},
        "dependsOn": {"type": "array", "items": CROSS_NAMESPACE_REF},
        "driftDetection": {"type": "object"},
        "postRenderers": {"type": "array", "items": {"type": "object"}},
        "maxHistory": {"type": "integer"},
        "persistentClient": {"type": "boolean"},
        "kubeConfig": {"type": "object"},
    }})

FLUX_SCHEMAS = {
    ("source.toolkit.fluxcd.io/v1", "HelmRepository"): HELM_REPOSITORY,
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): HELM_RELEASE,
    ("source.toolkit.fluxcd.io/v1", "OCIRepository"): OCI_REPOSITORY,
    ("source.toolkit.fluxcd.io/v1", "ExternalArtifact"): EXTERNAL_ARTIFACT,
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): KUSTOMIZATION,
    ("notification.toolkit.fluxcd.io/v1beta3", "Provider"): PROVIDER,
    ("notification.toolkit.fluxcd.io/v1beta3", "Alert"): ALERT,
    ("notification.toolkit.fluxcd.io/v1", "Receiver"): RECEIVER,
}


# --- validation -----------------------------------------------------------------------------

def json_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def describe(obj: dict) -> str:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    namespace = metadata.get("namespace")
    name = metadata.get("name", "?")
    return f"{obj.get('kind', '?')}/{namespace + '/' if namespace else ''}{name}"


class Validator:
    def __init__(self, kubernetes_version: str):
        import jsonschema
        import kubernetes_validate

        self.kubernetes_version = kubernetes_version
        self.kv = kubernetes_validate
        self.flux_validators = {}
        for key, schema in FLUX_SCHEMAS.items():
            jsonschema.Draft202012Validator.check_schema(schema)
            self.flux_validators[key] = jsonschema.Draft202012Validator(schema)
        # Fails here (not per object) when the package lacks that version.
        supported = kubernetes_validate.utils.all_versions()
        if not any(v.startswith(kubernetes_version + ".") or v == kubernetes_version for v in supported):
            raise SystemExit(f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for "
                             f"Kubernetes {kubernetes_version} (it has {', '.join(supported)})")

    def validate(self, obj) -> list[str]:
        """Problems with one rendered object (empty when valid)."""
        if not isinstance(obj, dict):
            return [f"not a mapping: {type(obj).__name__}"]
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return ["apiVersion and kind must be strings"]
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
            return ["metadata.name is required"]
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        if group.endswith(FLUX_GROUP_SUFFIX):
            validator = self.flux_validators.get((api_version, kind))
            if validator is None:
                return [f"no schema for Flux {kind} {api_version} (add one to FLUX_SCHEMAS)"]
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
            return [f"{json_path(e.absolute_path)}: {e.message}" for e in errors]
        try:
            self.kv.validate(obj, self.kubernetes_version, strict=True)
        except self.kv.ValidationError as error:
            return [f"{json_path(error.path)}: {error.message}"]
        except self.kv.SchemaNotFoundError as error:
            return [f"no schema: {error.message}"]
        except Exception as error:  # a malformed object the schema code trips over
            return [f"could not be validated: {type(error).__name__}: {error}"]
        return []


def kustomize_dirs(deploy: Path) -> list[Path]:
    found = set()
    for root, dirs, files in os.walk(deploy):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if any(name in files for name in KUSTOMIZATION_FILES):
            found.add(Path(root))
    return sorted(found)


def load_documents(text: str, source: str, errors: list[str]) -> list:
    import yaml

    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        errors.append(f"{source}: not valid YAML: {error}")
        return []


def main(argv=None) -> int:
    here = Path(__file__).resolve()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploy", type=Path, default=here.parents[4] / "deploy",
                        help="the deploy directory to check (default: the repository's deploy/)")
    parser.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
                        help=f"Kubernetes schema version for built-in kinds (default {DEFAULT_KUBERNETES_VERSION})")
    parser.add_argument("--kubectl", default=None, help="kubectl to run (default: the one on PATH)")
    parser.add_argument("--file", type=Path, action="append", default=[],
                        help="also validate this rendered multi-document YAML file (repeatable)")
    args = parser.parse_args(argv)

    report = {"directories": 0, "objects": 0, "errors": []}
    errors = report["errors"]

    def finish() -> int:
        print(json.dumps(report, indent=2))
        return 1 if errors else 0

    try:
        validator = Validator(args.kubernetes_version)
    except ImportError as error:
        errors.append(f"missing Python package ({error.name}): pip install kubernetes-validate==1.37.0")
        return finish()
    except SystemExit as error:
        errors.append(str(error))
        return finish()

    deploy = args.deploy.resolve()
    base = deploy.parent

    def relative(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(base))
        except ValueError:
            return path.name

    def check(text: str, source: str) -> None:
        documents = load_documents(text, source, errors)
        if not documents:
            errors.append(f"{source}: no objects")
        for index, obj in enumerate(documents):
            report["objects"] += 1
            label = describe(obj) if isinstance(obj, dict) else f"document {index}"
            errors.extend(f"{source}: {label}: {problem}" for problem in validator.validate(obj))

    if not deploy.is_dir():
        errors.append(f"no deploy directory at {relative(deploy)}")
        return finish()
    kubectl = args.kubectl or shutil.which("kubectl")
    if not kubectl:
        errors.append("kubectl not found on PATH (its built-in kustomize renders deploy/)")
        return finish()

    for directory in kustomize_dirs(deploy):
        report["directories"] += 1
        name = relative(directory)
        try:
            result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                                    timeout=120)
        except subprocess.TimeoutExpired:
            errors.append(f"{name}: kubectl kustomize timed out")
            continue
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().replace(str(base) + os.sep, "")
            errors.append(f"{name}: kubectl kustomize failed: {message}")
            continue
        check(result.stdout, name)

    for path in args.file:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            errors.append(f"{path.name}: cannot read: {error.strerror}")
            continue
        check(text, path.name)

    return finish()


if __name__ == "__main__":
    sys.exit(main())
