#!/usr/bin/env python3
"""Benchmark `artifact-mirror pack` against `git archive --format=tar.gz`.

Both tools package the same commit of a generated, GitOps-like repository;
each timed run alternates which tool goes first. Reported per tool: median
wall time, peak RSS, CPU time, artifact size. Targets checked:

  time:  median(ours, warm cache) / median(git archive)  <= 1.0
  RSS:   peak RSS of ours  <=  100 MiB + largest single file in the repo

Exit status 0 whatever the PASS/FAIL lines say, unless --strict (then 1 on a
FAIL). 2 = usage or setup error, 3 = a benchmarked command failed.

The repository (default: <tmp>/relay-bench-repo-v1, one bare repo, one commit
on `main`) is generated once with `git fast-import` from a fixed seed and
reused by later runs; it is complete when its marker file exists.

Peak RSS is ru_maxrss from os.wait4() on the benchmarked process. Linux carries
the RSS high-water mark of the process that forked it over to the child, so
every command is started by a small fresh launcher process: the resulting floor
(a few MiB) is measured with `true` and printed. On Linux the launcher also
samples VmHWM from /proc while the command runs, shown as "sampled".

Examples:
  swift build -c release --product artifact-mirror
  python3 Benchmarks/pack_vs_git_archive.py
  python3 Benchmarks/pack_vs_git_archive.py --files 2000 --megabytes 20 --runs 5 --json
  python3 Benchmarks/pack_vs_git_archive.py --git-only        # no binary needed
  python3 Benchmarks/pack_vs_git_archive.py --generate-only
"""

import argparse
import base64
import json
import math
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib

GENERATOR_VERSION = 1
SEED = 0x5E1A7_2024
DEFAULT_FILES = 20000
DEFAULT_MEGABYTES = 200
MIB = 1 << 20
MARKER = "relay-bench-complete.json"
RSS_BASE_BUDGET = 100 * MIB
COMMIT_TIME = "1700000000 +0000"


def log(msg=""):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class SetupError(Exception):
    pass


class CommandFailed(Exception):
    pass


# =====================================================================
# Content generation
# =====================================================================

APPS = """payments checkout auth gateway search catalog billing ledger notifications
inventory orders shipping recommendations analytics reporting frontend backend worker
scheduler ingest metrics logging tracing vault redis postgres kafka rabbitmq elastic minio
identity profile cart pricing promotions reviews media thumbnails webhooks audit fraud
onboarding support chat email sms geo maps routing fleet telemetry exporter importer
sync cache proxy edge cdn dns certs admission keda argo grafana loki tempo""".split()

ENVS = """production staging dev qa perf sandbox preview prod-eu-west-1 prod-us-east-1
prod-ap-south-1 staging-eu dr""".split()

TEAMS = """platform core commerce growth data infra security sre mobile web ml
finance ops""".split()

WORDS = """alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima
mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee
zulu primary secondary replica shard leader follower blue green canary stable
internal external public private legacy v2 v3 batch stream realtime nightly hourly
daily weekly east west north south central upper lower inner outer main aux""".split()

SUBDIRS = """base overlays config patches monitoring secrets rbac network jobs crds
policies alerts dashboards hooks components""".split()

INFRA = """cert-manager ingress-nginx external-dns external-secrets kyverno
prometheus-stack loki tempo velero cluster-autoscaler karpenter metrics-server
sealed-secrets flux-system istio linkerd cilium traefik""".split()

ENV_KEYS = """LOG_LEVEL LOG_FORMAT HTTP_PORT GRPC_PORT METRICS_PORT DATABASE_URL
DATABASE_POOL_SIZE REDIS_URL KAFKA_BROKERS KAFKA_TOPIC FEATURE_FLAGS OTEL_EXPORTER_ENDPOINT
OTEL_SERVICE_NAME CACHE_TTL_SECONDS MAX_CONNECTIONS REQUEST_TIMEOUT_MS RETRY_BACKOFF_MS
REGION CLUSTER_NAME TENANT_ID JWT_ISSUER JWT_AUDIENCE S3_BUCKET S3_ENDPOINT
WORKER_CONCURRENCY QUEUE_NAME GOMAXPROCS JAVA_OPTS NODE_OPTIONS SENTRY_DSN""".split()

SENTENCE = """the of and to a in is that for it as with was on be by this are
resource field value when used specifies which object name namespace selector
controller default must should may optional required list map string integer
reference status condition update create delete policy spec template container
pod node volume port protocol label annotation secret config""".split()


def h(r, nbytes):
    return r.randbytes(nbytes).hex()


def b64(r, nbytes):
    return base64.b64encode(r.randbytes(nbytes)).decode("ascii")


def version(r):
    return "%d.%d.%d" % (r.randint(0, 4), r.randint(0, 30), r.randint(0, 40))


def words(r, n):
    return " ".join(r.choice(SENTENCE) for _ in range(n))


def labels(r, app, name, team, ind):
    return [
        ind + "labels:",
        ind + "  app.kubernetes.io/name: " + app,
        ind + "  app.kubernetes.io/instance: " + name,
        ind + '  app.kubernetes.io/version: "%s"' % version(r),
        ind + "  app.kubernetes.io/part-of: " + team,
        ind + "  app.kubernetes.io/managed-by: flux",
    ]


def metadata(r, kind, api, ctx, suffix=""):
    app, ns, team = ctx
    name = app + ("-" + suffix if suffix else "")
    out = ["apiVersion: " + api, "kind: " + kind, "metadata:", "  name: " + name,
           "  namespace: " + ns]
    out += labels(r, app, name, team, "  ")
    if r.random() < 0.5:
        out += ["  annotations:",
                "    kustomize.toolkit.fluxcd.io/reconcile: enabled",
                "    checksum/config: " + h(r, 32)]
    return out, name


def env_value(r):
    x = r.random()
    if x < 0.3:
        return '"%d"' % r.choice([1, 2, 4, 8, 16, 30, 60, 100, 250, 1000, 3600, r.randint(1, 99999)])
    if x < 0.5:
        return "%s.%s.svc.cluster.local:%d" % (r.choice(APPS), r.choice(APPS), r.choice([80, 443, 5432, 6379, 9092, 8080]))
    if x < 0.65:
        return r.choice(["info", "debug", "warn", "json", "text", "true", "false", "enabled"])
    if x < 0.8:
        return "https://%s.%s.example.com/%s" % (r.choice(APPS), r.choice(ENVS), r.choice(WORDS))
    return h(r, r.choice([8, 16, 20]))


def doc_deployment(r, ctx, kind="Deployment"):
    app, ns, team = ctx
    out, name = metadata(r, kind, "apps/v1", ctx, r.choice(WORDS) if r.random() < 0.4 else "")
    port = r.choice([8080, 8081, 3000, 9000, 50051])
    out += ["spec:", "  replicas: %d" % r.randint(1, 12), "  revisionHistoryLimit: 5",
            "  selector:", "    matchLabels:", "      app.kubernetes.io/name: " + app,
            "  template:", "    metadata:"]
    out += labels(r, app, name, team, "      ")
    out += ["      annotations:", "        prometheus.io/scrape: \"true\"",
            '        prometheus.io/port: "%d"' % (port + 1),
            "    spec:", "      serviceAccountName: " + name,
            "      securityContext:", "        runAsNonRoot: true",
            "        runAsUser: %d" % r.choice([1000, 10001, 65532]),
            "        fsGroup: %d" % r.choice([1000, 2000, 65532]),
            "      containers:"]
    for c in range(r.choice([1, 1, 1, 2, 3])):
        cname = app if c == 0 else r.choice(["sidecar", "proxy", "exporter", "agent", "init"])
        out += ["        - name: " + cname,
                "          image: registry.example.com/%s/%s:%s@sha256:%s" % (team, cname, version(r), h(r, 32)),
                "          imagePullPolicy: IfNotPresent",
                "          ports:", "            - name: http",
                "              containerPort: %d" % port, "              protocol: TCP",
                "          env:"]
        for k in r.sample(ENV_KEYS, r.randint(3, 14)):
            out += ["            - name: " + k, "              value: " + env_value(r)]
        if r.random() < 0.4:
            out += ["            - name: DB_PASSWORD", "              valueFrom:",
                    "                secretKeyRef:", "                  name: %s-db" % app,
                    "                  key: password"]
        out += ["          resources:", "            requests:",
                "              cpu: %dm" % r.choice([50, 100, 200, 250, 500]),
                "              memory: %dMi" % r.choice([64, 128, 256, 512]),
                "            limits:", "              cpu: %dm" % r.choice([500, 1000, 2000]),
                "              memory: %dMi" % r.choice([256, 512, 1024, 2048]),
                "          livenessProbe:", "            httpGet:", "              path: /healthz",
                "              port: http", "            initialDelaySeconds: %d" % r.choice([5, 10, 30]),
                "            periodSeconds: %d" % r.choice([10, 15, 30]),
                "          readinessProbe:", "            httpGet:", "              path: /ready",
                "              port: http"]
    return out


def doc_service(r, ctx):
    app = ctx[0]
    out, _ = metadata(r, "Service", "v1", ctx)
    out += ["spec:", "  type: " + r.choice(["ClusterIP", "ClusterIP", "LoadBalancer", "NodePort"]),
            "  selector:", "    app.kubernetes.io/name: " + app, "  ports:"]
    for p in r.sample([80, 443, 8080, 9090, 50051, 5432], r.randint(1, 3)):
        out += ["    - name: port-%d" % p, "      port: %d" % p, "      targetPort: %d" % (p + r.choice([0, 8000])),
                "      protocol: TCP"]
    return out


def doc_configmap(r, ctx):
    out, _ = metadata(r, "ConfigMap", "v1", ctx, r.choice(WORDS))
    out += ["data:"]
    for _ in range(r.randint(2, 6)):
        key = "%s.%s" % (r.choice(WORDS), r.choice(["properties", "conf", "yaml", "ini", "json"]))
        out.append("  %s: |" % key)
        for _ in range(r.randint(5, 40)):
            out.append("    %s.%s.%s=%s" % (r.choice(APPS), r.choice(WORDS), r.choice(SENTENCE), env_value(r)))
    for k in r.sample(ENV_KEYS, r.randint(2, 10)):
        out.append("  %s: %s" % (k, env_value(r)))
    return out


def doc_sealedsecret(r, ctx):
    out, _ = metadata(r, "SealedSecret", "bitnami.com/v1alpha1", ctx, r.choice(WORDS))
    out += ["spec:", "  encryptedData:"]
    for k in r.sample(ENV_KEYS, r.randint(1, 4)):
        out.append("    %s: %s" % (k, b64(r, r.choice([128, 256, 384]))))
    out += ["  template:", "    type: Opaque"]
    return out


def values_tree(r, depth, ind, out, budget):
    for _ in range(r.randint(2, 7)):
        if budget[0] <= 0:
            return
        key = r.choice(WORDS + SENTENCE[20:])
        if depth < 4 and r.random() < 0.35:
            out.append(ind + key + ":")
            values_tree(r, depth + 1, ind + "  ", out, budget)
        elif r.random() < 0.15:
            out.append(ind + key + ":")
            for _ in range(r.randint(1, 5)):
                out.append(ind + "  - " + r.choice([r.choice(APPS), env_value(r), version(r)]))
        else:
            out.append(ind + "%s: %s" % (key, r.choice([env_value(r), str(r.randint(0, 5000)),
                                                         "true", "false", version(r), r.choice(APPS)])))
        budget[0] -= 1


def doc_helmrelease(r, ctx):
    app = ctx[0]
    out, _ = metadata(r, "HelmRelease", "helm.toolkit.fluxcd.io/v2", ctx)
    out += ["spec:", "  interval: %dm" % r.choice([1, 5, 10, 30, 60]), "  chart:", "    spec:",
            "      chart: " + app, '      version: "%s"' % version(r), "      sourceRef:",
            "        kind: HelmRepository", "        name: " + r.choice(TEAMS) + "-charts",
            "        namespace: flux-system", "  install:", "    remediation:",
            "      retries: %d" % r.randint(1, 5), "  values:"]
    values_tree(r, 0, "    ", out, [r.randint(20, 120)])
    return out


def doc_kustomization(r, ctx):
    out = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization",
           "namespace: " + ctx[1], "resources:"]
    for _ in range(r.randint(2, 12)):
        out.append("  - %s-%s.yaml" % (r.choice(["deployment", "service", "configmap", "ingress", "hpa"]), r.choice(WORDS)))
    if r.random() < 0.5:
        out += ["images:", "  - name: " + ctx[0], "    newTag: " + version(r),
                "    digest: sha256:" + h(r, 32)]
    return out


def doc_ingress(r, ctx):
    app, ns, team = ctx
    out, _ = metadata(r, "Ingress", "networking.k8s.io/v1", ctx)
    host = "%s.%s.example.com" % (app, r.choice(ENVS))
    out += ["spec:", "  ingressClassName: nginx", "  tls:", "    - hosts:", "        - " + host,
            "      secretName: %s-tls" % app, "  rules:", "    - host: " + host, "      http:",
            "        paths:"]
    for _ in range(r.randint(1, 5)):
        out += ["          - path: /" + r.choice(WORDS), "            pathType: Prefix",
                "            backend:", "              service:", "                name: " + app,
                "                port:", "                  number: %d" % r.choice([80, 8080])]
    return out


def doc_networkpolicy(r, ctx):
    out, _ = metadata(r, "NetworkPolicy", "networking.k8s.io/v1", ctx, "allow-" + r.choice(WORDS))
    out += ["spec:", "  podSelector:", "    matchLabels:", "      app.kubernetes.io/name: " + ctx[0],
            "  policyTypes:", "    - Ingress", "    - Egress", "  ingress:"]
    for _ in range(r.randint(1, 6)):
        out += ["    - from:", "        - namespaceSelector:", "            matchLabels:",
                "              kubernetes.io/metadata.name: " + r.choice(APPS),
                "      ports:", "        - port: %d" % r.choice([80, 443, 8080, 9090]),
                "          protocol: TCP"]
    return out


def doc_prometheusrule(r, ctx):
    app = ctx[0]
    out, _ = metadata(r, "PrometheusRule", "monitoring.coreos.com/v1", ctx)
    out += ["spec:", "  groups:", "    - name: %s.rules" % app, "      rules:"]
    for _ in range(r.randint(2, 10)):
        metric = "%s_%s_%s" % (app.replace("-", "_"), r.choice(WORDS), r.choice(["total", "seconds", "bytes", "errors"]))
        out += ["        - alert: %s%s" % (app.title().replace("-", ""), r.choice(WORDS).title()),
                "          expr: sum(rate(%s{job=\"%s\"}[%dm])) by (pod) > %s" % (metric, app, r.choice([1, 5, 15]), r.choice(["0", "0.5", "100", str(r.randint(1, 999))])),
                "          for: %dm" % r.choice([1, 5, 10, 15]), "          labels:",
                "            severity: " + r.choice(["warning", "critical", "info"]),
                "          annotations:", "            summary: " + words(r, r.randint(5, 12)),
                "            runbook_url: https://runbooks.example.com/%s/%s" % (app, h(r, 4))]
    return out


def doc_hpa(r, ctx):
    out, _ = metadata(r, "HorizontalPodAutoscaler", "autoscaling/v2", ctx)
    out += ["spec:", "  scaleTargetRef:", "    apiVersion: apps/v1", "    kind: Deployment",
            "    name: " + ctx[0], "  minReplicas: %d" % r.randint(1, 3),
            "  maxReplicas: %d" % r.randint(4, 50), "  metrics:", "    - type: Resource",
            "      resource:", "        name: cpu", "        target:", "          type: Utilization",
            "          averageUtilization: %d" % r.choice([60, 70, 75, 80])]
    return out


def doc_rbac(r, ctx):
    out, _ = metadata(r, r.choice(["Role", "ClusterRole"]), "rbac.authorization.k8s.io/v1", ctx, r.choice(WORDS))
    out += ["rules:"]
    for _ in range(r.randint(1, 6)):
        out += ['  - apiGroups: ["%s"]' % r.choice(["", "apps", "batch", "networking.k8s.io"]),
                "    resources: [%s]" % ", ".join(r.sample(["pods", "services", "configmaps", "secrets", "deployments", "jobs", "ingresses"], 3)),
                "    verbs: [%s]" % ", ".join(r.sample(["get", "list", "watch", "create", "update", "patch", "delete"], 3))]
    return out


def doc_cronjob(r, ctx):
    out, _ = metadata(r, "CronJob", "batch/v1", ctx, r.choice(WORDS))
    out += ["spec:", '  schedule: "%d %d * * *"' % (r.randint(0, 59), r.randint(0, 23)),
            "  concurrencyPolicy: Forbid", "  jobTemplate:", "    spec:", "      template:",
            "        spec:", "          restartPolicy: OnFailure", "          containers:",
            "            - name: job",
            "              image: registry.example.com/%s/%s:%s" % (ctx[2], ctx[0], version(r)),
            "              args:"]
    for _ in range(r.randint(1, 8)):
        out.append("                - --%s=%s" % (r.choice(WORDS), env_value(r)))
    return out


DOCS = [
    (doc_deployment, 16), (doc_service, 10), (doc_configmap, 12), (doc_sealedsecret, 3),
    (doc_helmrelease, 12), (doc_kustomization, 6), (doc_ingress, 6), (doc_networkpolicy, 6),
    (doc_prometheusrule, 6), (doc_hpa, 5), (doc_rbac, 6), (doc_cronjob, 4),
]
DOC_FUNCS = [d for d, _ in DOCS]
DOC_WEIGHTS = [w for _, w in DOCS]
KIND_FILES = {
    "deployment": doc_deployment, "service": doc_service, "configmap": doc_configmap,
    "sealedsecret": doc_sealedsecret, "helmrelease": doc_helmrelease,
    "kustomization": doc_kustomization, "ingress": doc_ingress, "networkpolicy": doc_networkpolicy,
    "prometheusrule": doc_prometheusrule, "hpa": doc_hpa, "rbac": doc_rbac, "cronjob": doc_cronjob,
}

TREE_KINDS = [k for k in KIND_FILES if k != "kustomization"]


def fit(text, size):
    """Exactly `size` bytes (ASCII text), ending with a newline."""
    data = text.encode("ascii")
    if len(data) < size:
        data += b"#" * (size - len(data))
    data = data[:size]
    if size and not data.endswith(b"\n"):
        data = data[:-1] + b"\n"
    return data


def yaml_file(r, ctx, size, first=None):
    parts = []
    n = 0
    f = first
    while n < size:
        if f is None:
            f = r.choices(DOC_FUNCS, DOC_WEIGHTS)[0]
        lines = f(r, ctx)
        lines.append("---")
        chunk = "\n".join(lines) + "\n"
        parts.append(chunk)
        n += len(chunk)
        f = None
    return fit("".join(parts), size)


def crd_bundle(r, size):
    """A big CRD bundle: deep openAPI schemas with descriptions."""
    parts = []
    n = 0
    i = 0
    while n < size:
        i += 1
        group = "%s.%s.example.com" % (r.choice(APPS), r.choice(TEAMS))
        kind = r.choice(WORDS).title() + r.choice(APPS).title()
        out = ["apiVersion: apiextensions.k8s.io/v1", "kind: CustomResourceDefinition",
               "metadata:", "  name: %ss.%s" % (kind.lower(), group),
               "  annotations:", "    controller-gen.kubebuilder.io/version: v0.%d.0" % r.randint(9, 16),
               "spec:", "  group: " + group, "  names:", "    kind: " + kind,
               "    plural: %ss" % kind.lower(), "  scope: Namespaced", "  versions:",
               "    - name: v1", "      served: true", "      storage: true", "      schema:",
               "        openAPIV3Schema:", "          type: object", "          properties:"]

        def props(depth, ind):
            for _ in range(r.randint(2, 6)):
                name = r.choice(WORDS) + r.choice(SENTENCE).title()
                out.append(ind + name + ":")
                out.append(ind + "  description: " + words(r, r.randint(6, 30)))
                if depth < 5 and r.random() < 0.4:
                    out.append(ind + "  type: object")
                    out.append(ind + "  properties:")
                    props(depth + 1, ind + "    ")
                else:
                    t = r.choice(["string", "integer", "boolean", "array"])
                    out.append(ind + "  type: " + t)
                    if t == "integer":
                        out.append(ind + "  format: int%d" % r.choice([32, 64]))
                        out.append(ind + "  minimum: %d" % r.randint(0, 10))
                    elif t == "string" and r.random() < 0.3:
                        out.append(ind + "  enum: [%s]" % ", ".join(r.sample(WORDS, 3)))
                    elif t == "array":
                        out.append(ind + "  items:")
                        out.append(ind + "    type: string")
        props(0, "            ")
        out.append("---")
        chunk = "\n".join(out) + "\n"
        parts.append(chunk)
        n += len(chunk)
    return fit("".join(parts), size)


def binaryish(r, size):
    """ELF-looking blob: code-like random bytes, string tables, zero padding."""
    out = [b"\x7fELF\x02\x01\x01\x00" + bytes(8) + struct.pack("<HHI", 2, 62, 1)]
    n = len(out[0])
    while n < size:
        x = r.random()
        if x < 0.55:
            chunk = r.randbytes(r.randint(2048, 16384))
        elif x < 0.85:
            chunk = b"\0".join(("%s.%s.%s_%d" % (r.choice(APPS), r.choice(WORDS), r.choice(SENTENCE), r.randint(0, 999))).encode()
                               for _ in range(r.randint(50, 400))) + b"\0"
        else:
            chunk = bytes(r.randint(512, 8192))
        out.append(chunk)
        n += len(chunk)
    return b"".join(out)[:size]


def png(r, w, hgt):
    """A valid RGB PNG: a gradient with low-amplitude noise (compresses like a screenshot)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    grad = int.from_bytes(bytes((x * 240 // w) for x in range(w) for _ in range(3)), "big")
    mask = bytes.maketrans(bytes(range(256)), bytes(b & 0x01 for b in range(256)))
    rows = []
    for _ in range(hgt):
        noise = int.from_bytes(r.randbytes(w * 3).translate(mask), "big")
        rows.append(b"\0" + (grad + noise).to_bytes(w * 3, "big"))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, hgt, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


def shell_script(r, name, size):
    lines = ["#!/usr/bin/env bash", "# %s: %s" % (name, words(r, 10)), "set -euo pipefail", ""]
    while sum(len(x) + 1 for x in lines) < size:
        fn = "%s_%s" % (r.choice(WORDS), r.choice(APPS).replace("-", "_"))
        lines += ["%s() {" % fn,
                  '  local target="${1:-%s}"' % r.choice(ENVS),
                  '  echo "==> %s ${target}"' % words(r, 4),
                  "  kubectl --context \"${target}\" -n %s get %s -o yaml > \"/tmp/%s.yaml\"" % (r.choice(APPS), r.choice(["pods", "deploy", "svc", "cm"]), h(r, 4)),
                  "  flux reconcile kustomization %s --with-source" % r.choice(APPS),
                  "}", ""]
    return fit("\n".join(lines) + "\n", size)


GITHUB_CI = """name: ci
on:
  pull_request:
  push:
    branches: [main]
jobs:
  validate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: kubeconform
        run: ./scripts/validate.sh
      - name: flux diff
        run: flux diff kustomization apps --path ./clusters/production
"""


class Plan:
    """The list of files to create: (path, mode, kind, size, extra)."""

    def __init__(self, n_files, megabytes):
        self.items = []
        self.paths = set()
        r = random.Random("plan:%d:%d:%d:%d" % (GENERATOR_VERSION, SEED, n_files, megabytes))
        target = megabytes * MIB
        scale = min(1.0, megabytes / 100.0)

        def add(path, mode, kind, size, extra=None):
            assert path not in self.paths, path
            self.paths.add(path)
            self.items.append((path, mode, kind, size, extra))

        # Fixed, "special" files.
        add("README.md", "100644", "text", 6000)
        add(".gitignore", "100644", "literal", 0, b"*.swp\n.DS_Store\n/tmp/\n*.decrypted.yaml\n")
        add(".sops.yaml", "100644", "literal", 0,
            b"creation_rules:\n  - path_regex: .*/secrets/.*\\.yaml\n    encrypted_regex: ^(data|stringData)$\n")
        add(".github/workflows/ci.yml", "100644", "literal", 0, GITHUB_CI.encode())
        add(".github/workflows/release.yml", "100644", "yaml", 3000)
        add(".github/CODEOWNERS", "100644", "literal", 0, b"* @example/platform\n/clusters/production/ @example/sre\n")
        add("docs/README.md", "120000", "symlink", 0, b"../README.md")
        for i, doc in enumerate(["architecture", "runbook", "onboarding", "disaster-recovery"]):
            add("docs/%s.md" % doc, "100644", "text", r.randint(3000, 20000))
        for i, (w, hg) in enumerate([(320, 200), (480, 270), (640, 360), (256, 256), (800, 300)]):
            add("docs/images/%s-%d.png" % (r.choice(WORDS), i), "100644", "png", 0, (w, hg))
        for i in range(20):
            add("scripts/%s-%s.sh" % (r.choice(["deploy", "validate", "rotate", "bootstrap", "diff", "sync"]), r.choice(APPS) + str(i)),
                "100755", "script", r.randint(1000, 8000))
        for i in range(8):
            add("hack/%s-%d.sh" % (r.choice(WORDS), i), "100755", "script", r.randint(1000, 5000))
        # The large files.
        add("infrastructure/crds/bundle.yaml", "100644", "crds", max(64 << 10, int(7.5 * MIB * scale)))
        add("generated/rendered/all-manifests.yaml", "100644", "yaml", max(64 << 10, int(2.5 * MIB * scale)))
        add("vendor/bin/policy-engine", "100755", "binary", max(64 << 10, int(5 * MIB * scale)))

        special_count = len(self.items)
        # PNG sizes are known only once made; estimate generously (they are small).
        special_bytes = sum(it[3] if it[2] not in ("literal", "symlink", "png") else
                            (len(it[4]) if it[2] in ("literal", "symlink") else 0)
                            for it in self.items)
        png_estimate = 0  # counted as slack: totals are checked after generation

        # Tree files: log-uniform 1 KiB .. 40 KiB, scaled to the byte target.
        lo, hi = 1024, 40 * 1024
        n_tree = max(0, n_files - special_count)
        sizes = [int(math.exp(r.uniform(math.log(lo), math.log(hi)))) for _ in range(n_tree)]
        want = max(0, target - special_bytes - png_estimate)
        if sizes and sum(sizes):
            k = want / sum(sizes)
            sizes = [min(hi, max(lo, int(math.ceil(s * k)))) for s in sizes]
        while sum(sizes) < want:
            sizes.append(min(hi, want - sum(sizes)) if want - sum(sizes) >= lo
                         else max(lo, want - sum(sizes)))

        # Directories: 10-40 files each, depth 2-5.
        dirs = []
        seen = set()
        capacity = 0
        while capacity < len(sizes):
            x = r.random()
            env, app, team = r.choice(ENVS), r.choice(APPS), r.choice(TEAMS)
            if x < 0.35:
                d = "clusters/%s/%s" % (env, app)
            elif x < 0.55:
                d = "clusters/%s/%s/%s" % (env, app, r.choice(SUBDIRS))
            elif x < 0.65:
                d = "clusters/%s/%s/overlays/%s" % (env, app, r.choice(WORDS))
            elif x < 0.8:
                d = "apps/%s/%s" % (r.choice(["base"] + TEAMS), app)
            elif x < 0.9:
                comp = r.choice(INFRA)
                d = "infrastructure/%s" % comp if r.random() < 0.3 else \
                    "infrastructure/%s/%s" % (comp, r.choice(SUBDIRS))
            else:
                d = "tenants/%s/%s/%s" % (team, app, r.choice(["dev", "prod", "shared"]))
            if d in seen:
                continue
            seen.add(d)
            parts = d.split("/")
            if parts[0] == "infrastructure":
                ctx = (parts[1], parts[1], "platform")
            elif parts[0] == "tenants":
                ctx = (app, "%s-%s" % (team, app), team)
            else:
                ctx = (app, app if parts[0] == "apps" else "%s-%s" % (app, env), team)
            count = r.randint(10, 40)
            dirs.append((d, ctx, count))
            capacity += count

        i = 0
        for d, ctx, count in dirs:
            names = set()
            for j in range(count):
                if i >= len(sizes):
                    break
                size = sizes[i]
                i += 1
                if j == 0:
                    kind, fname = "kustomization", "kustomization.yaml"
                else:
                    kind = r.choice(TREE_KINDS)
                    ext = r.choices([".yaml", ".yml", ".json"], [90, 8, 2])[0]
                    fname = kind + ext
                    while fname in names:
                        fname = "%s-%s-%d%s" % (kind, r.choice(WORDS), r.randint(0, 99), ext)
                names.add(fname)
                path = d + "/" + fname
                # A few hook scripts are executable.
                if r.random() < 0.01:
                    path = d + "/hook-%d.sh" % j
                    if path in self.paths:
                        continue
                    add(path, "100755", "script", size)
                    continue
                add(path, "100644", "tree:" + kind, size, ctx)


def render(item):
    path, mode, kind, size, extra = item
    r = random.Random("file:%d:%d:%s" % (GENERATOR_VERSION, SEED, path))
    if kind in ("literal", "symlink"):
        return extra
    if kind == "png":
        return png(r, *extra)
    if kind == "script":
        return shell_script(r, path, size)
    if kind == "crds":
        return crd_bundle(r, size)
    if kind == "binary":
        return binaryish(r, size)
    if kind == "text":
        text = "# %s\n\n" % path
        while len(text) < size:
            text += "## %s\n\n%s.\n\n" % (words(r, 4).title(), ". ".join(words(r, r.randint(8, 20)).capitalize() for _ in range(r.randint(3, 8))))
        return fit(text, size)
    if kind == "yaml":
        return yaml_file(r, (r.choice(APPS), r.choice(APPS), r.choice(TEAMS)), size)
    if kind.startswith("tree:"):
        sub = kind[5:]
        data = yaml_file(r, extra, size, KIND_FILES[sub])
        if path.endswith(".json"):
            # Same content as a JSON document of lines (not YAML, still text).
            lines = data.decode("ascii").rstrip("\n").split("\n")
            return fit(json.dumps({"generated": path, "lines": lines}, indent=2), size)
        return data
    raise AssertionError(kind)


def git(*args, cwd=None, check=True, capture=True, env=None):
    try:
        p = subprocess.run(["git"] + list(args), cwd=cwd, env=env,
                           stdout=subprocess.PIPE if capture else None,
                           stderr=subprocess.PIPE if capture else None)
    except FileNotFoundError:
        raise SetupError("git not found on PATH")
    if check and p.returncode != 0:
        raise SetupError("git %s failed (exit %d): %s"
                         % (" ".join(args), p.returncode, (p.stderr or b"").decode(errors="replace").strip()))
    return p


def git_env():
    env = dict(os.environ)
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0",
               LC_ALL="C")
    return env


def generate(dest, n_files, megabytes):
    t0 = time.perf_counter()
    partial = "%s.partial-%d" % (dest.rstrip("/"), os.getpid())
    shutil.rmtree(partial, ignore_errors=True)
    env = git_env()
    try:
        git("init", "--quiet", "--bare", "--initial-branch=main", partial, env=env)
        plan = Plan(n_files, megabytes)
        total_planned = sum(it[3] for it in plan.items)
        log("generating %d files (~%.0f MiB planned) into %s" % (len(plan.items), total_planned / MIB, dest))
        fi = subprocess.Popen(["git", "-C", partial, "fast-import", "--quiet", "--done"],
                              stdin=subprocess.PIPE, env=env, stdout=subprocess.DEVNULL)
        w = fi.stdin
        entries = []
        done_bytes = 0
        last = time.perf_counter()
        try:
            for n, item in enumerate(plan.items, 1):
                data = render(item)
                w.write(b"blob\nmark :%d\ndata %d\n" % (n, len(data)))
                w.write(data)
                w.write(b"\n")
                entries.append((item[1], n, item[0]))
                done_bytes += len(data)
                now = time.perf_counter()
                if now - last >= 2 or n == len(plan.items):
                    last = now
                    log("  %6d/%d files  %7.1f MiB  %5.1fs" % (n, len(plan.items), done_bytes / MIB, now - t0))
            msg = ("Generated benchmark repository\n\ngenerator v%d, seed %d, files %d, megabytes %d\n"
                   % (GENERATOR_VERSION, SEED, n_files, megabytes)).encode()
            w.write(b"commit refs/heads/main\nmark :%d\n" % (len(plan.items) + 1))
            w.write(b"author Relay Bench <bench@relay.invalid> %s\n" % COMMIT_TIME.encode())
            w.write(b"committer Relay Bench <bench@relay.invalid> %s\n" % COMMIT_TIME.encode())
            w.write(b"data %d\n%s\n" % (len(msg), msg))
            for mode, mark, path in sorted(entries, key=lambda e: e[2]):
                w.write(b"M %s :%d %s\n" % (mode.encode(), mark, path.encode()))
            w.write(b"\ndone\n")
            w.close()
        except BrokenPipeError:
            pass    # fast-import died; its exit status says why
        except BaseException:
            fi.kill()
            fi.wait()
            raise
        if fi.wait() != 0:
            raise SetupError("git fast-import failed (exit %d)" % fi.returncode)
        commit = git("-C", partial, "rev-parse", "--verify", "refs/heads/main^{commit}", env=env).stdout.decode().strip()
        # fast-import deltifies each blob against the one written before it
        # (chains of 50 in write order); repack like `git gc` does on a server.
        log("repacking (git repack -a -d -f, as git gc would) ... %.1fs" % (time.perf_counter() - t0))
        git("-C", partial, "repack", "-a", "-d", "-f", "-q", env=env)
        git("-C", partial, "pack-refs", "--all", env=env)
        gen_seconds = time.perf_counter() - t0
        stats = tree_stats(partial, commit)
        if stats["files"] < n_files or stats["total_bytes"] < megabytes * MIB:
            raise SetupError("internal: generated %d files / %d bytes, fewer than asked"
                             % (stats["files"], stats["total_bytes"]))
        marker = {"generator_version": GENERATOR_VERSION, "seed": SEED, "files": n_files,
                  "megabytes": megabytes, "commit": commit,
                  "generation_seconds": round(gen_seconds, 2), "stats": stats}
        with open(os.path.join(partial, MARKER), "w") as f:
            json.dump(marker, f, indent=2)
        if os.path.exists(dest):
            os.rmdir(dest)          # only ever an empty directory here
        os.rename(partial, dest)
        log("generated commit %s in %.1fs" % (commit, gen_seconds))
        return marker
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def tree_stats(repo, commit):
    out = git("-C", repo, "ls-tree", "-r", "-l", "-z", commit).stdout
    st = {"files": 0, "regular": 0, "executable": 0, "symlinks": 0, "total_bytes": 0,
          "largest_file_bytes": 0, "largest_file": None, "flux_ignored_files": 0,
          "flux_ignored_bytes": 0}
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        mode, typ, oid, size = meta.split()
        if typ != b"blob":
            continue
        path = path.decode("utf-8", "replace")
        size = int(size)
        st["files"] += 1
        st["total_bytes"] += size
        if mode == b"120000":
            st["symlinks"] += 1
        else:
            st["executable" if mode == b"100755" else "regular"] += 1
            if size > st["largest_file_bytes"]:
                st["largest_file_bytes"], st["largest_file"] = size, path
        if flux_default_ignored(path):
            st["flux_ignored_files"] += 1
            st["flux_ignored_bytes"] += size
    return st


def flux_default_ignored(path):
    """Rough version of Flux's default exclusions, for the paths generated here."""
    import fnmatch
    base = path.rsplit("/", 1)[-1]
    top = path.split("/", 1)[0]
    if top in (".github", ".circleci", ".git"):
        return True
    if base in (".gitignore", ".gitmodules", ".gitattributes", ".travis.yml", ".gitlab-ci.yml",
                "appveyor.yml", ".drone.yml", "cloudbuild.yaml", ".goreleaser.yml", ".sops.yaml",
                ".flux.yaml"):
        return True
    return any(fnmatch.fnmatch(base, p) for p in
               ("*.jpg", "*.jpeg", "*.gif", "*.png", "*.wmv", "*.flv", "*.tar.gz", "*.zip"))


def ensure_repo(args):
    dest = os.path.abspath(args.repo)
    marker_path = os.path.join(dest, MARKER)
    # Leftovers of an interrupted generation of ours.
    parent, name = os.path.split(dest)
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            if entry.startswith(name + ".partial-"):
                pid = entry.rsplit("-", 1)[-1]
                alive = pid.isdigit() and os.path.exists("/proc/%s" % pid) if os.path.isdir("/proc") else True
                if not alive:
                    shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    if os.path.exists(marker_path):
        with open(marker_path) as f:
            marker = json.load(f)
        same = (marker.get("generator_version") == GENERATOR_VERSION and marker.get("seed") == SEED
                and marker.get("files") == args.files and marker.get("megabytes") == args.megabytes)
        if args.regenerate or not same:
            if not same and not args.regenerate:
                raise SetupError("%s was generated with files=%s megabytes=%s (generator v%s); "
                                 "pass --regenerate to replace it, or another --repo"
                                 % (dest, marker.get("files"), marker.get("megabytes"),
                                    marker.get("generator_version")))
            log("removing %s (--regenerate)" % dest)
            shutil.rmtree(dest)
        else:
            p = git("-C", dest, "cat-file", "-e", marker["commit"] + "^{commit}", check=False)
            if p.returncode != 0:
                raise SetupError("%s has a marker but commit %s is missing; pass --regenerate"
                                 % (dest, marker["commit"]))
            log("reusing generated repository %s (commit %s)" % (dest, marker["commit"][:12]))
            return dest, marker, False
    elif os.path.exists(dest):
        if not os.path.isdir(dest) or os.listdir(dest):
            raise SetupError("%s exists, is not empty and was not generated by this script "
                             "(no %s); choose another --repo" % (dest, MARKER))
    os.makedirs(parent, exist_ok=True)
    return dest, generate(dest, args.files, args.megabytes), True


# =====================================================================
# Measurement
# =====================================================================

# Runs as a fresh, small interpreter: forks the command, waits with wait4 and
# reports rusage + wall time as JSON on the given fd. A sampler thread reads
# VmHWM (the command's own peak RSS since exec, not its children's) from /proc
# where available, starting once the exec has happened.
LAUNCHER = r'''
import json, os, sys, threading, time
fd, out, err = int(sys.argv[1]), sys.argv[2], sys.argv[3]
argv = sys.argv[4:]
execd_r, execd_w = os.pipe()         # close-on-exec: EOF once the command runs
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        o = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        e = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(o, 1); os.dup2(e, 2)
        os.execvp(argv[0], argv)
    except BaseException as ex:
        os.write(2, ("cannot run %s: %s\n" % (argv[0], ex)).encode())
    os._exit(127)
os.close(execd_w)
hwm = [0]
stop = threading.Event()
def sample():
    path = "/proc/%d/status" % pid
    os.read(execd_r, 1)              # before exec, VmHWM would be the launcher's copy
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        hwm[0] = max(hwm[0], int(line.split()[1]))
                        break
        except (OSError, ValueError):
            pass
        stop.wait(0.005)
th = None
if os.path.exists("/proc/self/status"):
    th = threading.Thread(target=sample, daemon=True); th.start()
_, status, ru = os.wait4(pid, 0)
t1 = time.perf_counter()
stop.set()
if th: th.join()
os.close(execd_r)
os.write(fd, json.dumps({"wall": t1 - t0, "status": status, "maxrss": ru.ru_maxrss,
                         "utime": ru.ru_utime, "stime": ru.ru_stime,
                         "hwm_kib": hwm[0]}).encode())
'''


def measure(cmd, workdir, tag):
    out = os.path.join(workdir, tag + ".stdout")
    err = os.path.join(workdir, tag + ".stderr")
    r, w = os.pipe()
    try:
        p = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, str(w), out, err] + cmd,
                             pass_fds=(w,), stdin=subprocess.DEVNULL)
    finally:
        os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    p.wait()
    if p.returncode != 0 or not chunks:
        raise CommandFailed("launcher failed for %s" % cmd)
    res = json.loads(b"".join(chunks))
    maxrss = res["maxrss"]
    res["maxrss_kib"] = maxrss // 1024 if sys.platform == "darwin" else maxrss  # bytes on macOS
    res["exit"] = os.waitstatus_to_exitcode(res["status"])
    with open(out, "rb") as f:
        res["stdout"] = f.read()
    with open(err, "rb") as f:
        res["stderr"] = f.read()
    if res["exit"] != 0:
        tail = res["stderr"].decode(errors="replace").strip()[-2000:]
        raise CommandFailed("command failed (exit %d): %s\n%s" % (res["exit"], " ".join(cmd), tail))
    return res


def machine_info(binary):
    info = {"nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        info["nproc_available"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_mib"] = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    info["git_version"] = git("--version").stdout.decode().strip()
    if binary:
        info["binary"] = binary
        try:
            info["binary_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(binary)))
        except OSError:
            pass
    return info


def find_artifact(outdir, report):
    """The .tar.gz that `pack` wrote: "path" in its JSON, another .tar.gz path in
    it, else the largest .tar.gz under outdir."""
    if isinstance(report, dict) and isinstance(report.get("path"), str) and os.path.isfile(report["path"]):
        return report["path"]
    if isinstance(report, dict):
        stack = [report]
        while stack:
            d = stack.pop()
            for v in d.values():
                if isinstance(v, dict):
                    stack.append(v)
                elif isinstance(v, str) and v.endswith(".tar.gz"):
                    p = v if os.path.isabs(v) else os.path.join(outdir, v)
                    if os.path.isfile(p):
                        return p
    found = []
    for root, _, files in os.walk(outdir):
        found += [os.path.join(root, f) for f in files if f.endswith(".tar.gz")]
    return max(found, key=os.path.getsize) if found else None


def find_cached(report):
    if isinstance(report, dict):
        if "cached" in report:
            return report["cached"]
        for v in report.values():
            c = find_cached(v)
            if c is not None:
                return c
    return None


def run_ours(args, repo, cache, outdir, workdir, tag):
    cmd = [args.binary, "pack", repo, "--branch", "main", "--cache", cache, "--output", outdir, "--json"] + args.pack_arg
    res = measure(cmd, workdir, tag)
    text = res["stdout"].decode(errors="replace").strip()
    report = None
    try:
        report = json.loads(text)
    except ValueError:
        # Maybe log lines before the JSON: try the last line.
        try:
            report = json.loads(text.splitlines()[-1]) if text else None
        except ValueError:
            pass
    if report is None:
        log("WARNING: %s: `pack --json` printed no JSON on stdout: %r" % (tag, text[:200]))
    res["report"] = report
    cached = find_cached(report)
    res["cached"] = cached
    art = find_artifact(outdir, report)
    if art is None:
        raise CommandFailed("%s: no .tar.gz found under %s after pack" % (tag, outdir))
    res["size"] = os.path.getsize(art)
    res["artifact"] = art
    return res


def run_git(repo, commit, outfile, workdir, tag):
    cmd = ["git", "-C", repo, "archive", "--format=tar.gz", "-o", outfile, commit]
    res = measure(cmd, workdir, tag)
    res["size"] = os.path.getsize(outfile)
    return res


def fmt_mib(kib):
    return "%.1f" % (kib / 1024.0)


# =====================================================================
# Main
# =====================================================================

def default_repo_dir(files, megabytes):
    name = "relay-bench-repo-v%d" % GENERATOR_VERSION
    if (files, megabytes) != (DEFAULT_FILES, DEFAULT_MEGABYTES):
        name += "-f%d-m%d" % (files, megabytes)
    return os.path.join(tempfile.gettempdir(), name)


def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Build the binary first: swift build -c release --product artifact-mirror",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", metavar="DIR",
                    help="generated bare repository to use/create (default: %s; a non-default "
                         "--files/--megabytes gets its own directory)"
                         % default_repo_dir(DEFAULT_FILES, DEFAULT_MEGABYTES))
    ap.add_argument("--files", type=int, default=DEFAULT_FILES, metavar="N",
                    help="at least N files in the generated repo (default %(default)s)")
    ap.add_argument("--megabytes", type=int, default=DEFAULT_MEGABYTES, metavar="M",
                    help="at least M MiB of file content (default %(default)s)")
    ap.add_argument("--runs", type=int, default=3, metavar="R",
                    help="timed runs per tool (default %(default)s)")
    ap.add_argument("--binary", default=os.path.join(root, ".build", "release", "artifact-mirror"),
                    metavar="PATH", help="artifact-mirror binary (default: <repo root>/.build/release/artifact-mirror)")
    ap.add_argument("--json", action="store_true",
                    help="also print a JSON summary: JSON on stdout, the human report on stderr")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target FAILs")
    ap.add_argument("--git-only", action="store_true",
                    help="measure only git archive (no artifact-mirror binary needed)")
    ap.add_argument("--generate-only", action="store_true",
                    help="only make sure the repository exists; print its stats")
    ap.add_argument("--regenerate", action="store_true",
                    help="replace a previously generated repository in --repo")
    ap.add_argument("--pack-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for `artifact-mirror pack` (repeatable)")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the temporary work directory (artifacts, caches, logs)")
    args = ap.parse_args(argv)
    if args.files < 1:
        ap.error("--files must be >= 1")
    if args.megabytes < 1:
        ap.error("--megabytes must be >= 1")
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if args.repo is None:
        args.repo = default_repo_dir(args.files, args.megabytes)
    args.binary = os.path.abspath(args.binary)
    return args


def main(argv):
    args = parse_args(argv)
    ours_wanted = not (args.git_only or args.generate_only)
    if ours_wanted and not (os.path.isfile(args.binary) and os.access(args.binary, os.X_OK)):
        log("error: %s not found (or not executable).\n"
            "Build it first:  swift build -c release --product artifact-mirror\n"
            "or pass --binary PATH, or --git-only to measure git archive alone." % args.binary)
        return 2
    if shutil.which("git") is None:
        log("error: git not found on PATH")
        return 2

    out = sys.stderr if args.json else sys.stdout

    def say(s=""):
        out.write(s + "\n")
        out.flush()

    try:
        repo, marker, generated = ensure_repo(args)
    except SetupError as e:
        log("error: %s" % e)
        return 2
    commit = marker["commit"]
    stats = tree_stats(repo, commit)
    info = machine_info(args.binary if ours_wanted else None)

    say("machine: %d CPUs (%s available), %s, %s MiB RAM, %s" % (
        info["nproc"], info.get("nproc_available", "?"), info.get("cpu", "?"),
        info.get("mem_total_mib", "?"), info["platform"]))
    say("git: %s   python: %s   load average: %s" % (info["git_version"], info["python"],
                                                      " ".join(map(str, info.get("loadavg", [])))))
    if ours_wanted:
        say("binary: %s (built %s)" % (args.binary, info.get("binary_mtime", "?")))
    say("repo: %s  commit %s%s" % (repo, commit,
                                   "  (generated in %.1fs)" % marker["generation_seconds"] if generated
                                   else "  (reused; generation took %.1fs)" % marker.get("generation_seconds", 0)))
    say("      %d files (%d executable, %d symlink), %.1f MiB, largest %s = %.1f MiB"
        % (stats["files"], stats["executable"], stats["symlinks"], stats["total_bytes"] / MIB,
           stats["largest_file"], stats["largest_file_bytes"] / MIB))
    say("      Flux's default ignore rules drop %d files / %.1f MiB of these (git archive keeps them)"
        % (stats["flux_ignored_files"], stats["flux_ignored_bytes"] / MIB))
    summary = {"machine": info, "repo": repo, "commit": commit, "repo_stats": stats,
               "generation_seconds": marker.get("generation_seconds"), "generated_now": generated}
    if args.generate_only:
        if args.json:
            print(json.dumps(summary, indent=2))
        return 0

    workdir = tempfile.mkdtemp(prefix="relay-bench-work-")
    try:
        floor = measure(["true"], workdir, "floor")
        say("RSS measurement floor (wait4 of `true` via the launcher): %s MiB" % fmt_mib(floor["maxrss_kib"]))
        say("")
        git_runs, our_runs, cold = [], [], None

        def git_once(tag):
            f = os.path.join(workdir, tag + ".tar.gz")
            res = run_git(repo, commit, f, workdir, tag)
            os.remove(f)
            return res

        log("git archive: warm-up (untimed)")
        git_once("git-warmup")
        cache = os.path.join(workdir, "cache")
        if ours_wanted:
            log("artifact-mirror pack: cold run (fresh cache; includes the clone; also the warm-up)")
            o = os.path.join(workdir, "out-cold")
            os.makedirs(o)
            cold = run_ours(args, repo, cache, o, workdir, "ours-cold")
            shutil.rmtree(o)
        for i in range(args.runs):
            order = ["ours", "git"] if i % 2 == 0 else ["git", "ours"]
            for tool in order:
                if tool == "git":
                    res = git_once("git-%d" % i)
                    git_runs.append(res)
                    log("run %d/%d git archive          %7.2fs  %7s MiB" % (i + 1, args.runs, res["wall"], fmt_mib(res["maxrss_kib"])))
                elif ours_wanted:
                    o = os.path.join(workdir, "out-%d" % i)
                    os.makedirs(o)
                    res = run_ours(args, repo, cache, o, workdir, "ours-%d" % i)
                    shutil.rmtree(o)
                    our_runs.append(res)
                    log("run %d/%d artifact-mirror pack %7.2fs  %7s MiB%s" % (
                        i + 1, args.runs, res["wall"], fmt_mib(res["maxrss_kib"]),
                        "" if res["cached"] is False else "  cached=%r" % res["cached"]))
                    if res["cached"]:
                        log("WARNING: pack reported cached=true although --output is fresh; "
                            "this run did not re-pack")
                    elif res["cached"] is None and res["report"] is not None:
                        log("WARNING: pack's JSON has no \"cached\" field")
    except CommandFailed as e:
        log("error: %s" % e)
        return 3
    finally:
        if args.keep_work:
            log("work directory kept: %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    def agg(runs):
        if not runs:
            return None
        walls = [r["wall"] for r in runs]
        return {"runs": len(runs), "median_wall_s": statistics.median(walls),
                "min_wall_s": min(walls), "max_wall_s": max(walls),
                "walls_s": walls,
                "max_peak_rss_kib": max(r["maxrss_kib"] for r in runs),
                "max_sampled_hwm_kib": max(r["hwm_kib"] for r in runs),
                "median_cpu_s": statistics.median(r["utime"] + r["stime"] for r in runs),
                "artifact_bytes": runs[-1]["size"]}

    g = agg(git_runs)
    o = agg(our_runs)
    cols = [("artifact-mirror pack", o)] if ours_wanted else []
    cols.append(("git archive", g))
    say("%-26s" % "" + "".join("%24s" % c for c, _ in cols))

    def row(label, fn):
        say("%-26s" % label + "".join("%24s" % (fn(a) if a else "-") for _, a in cols))

    row("median wall (s)", lambda a: "%.3f" % a["median_wall_s"])
    row("min / max wall (s)", lambda a: "%.3f / %.3f" % (a["min_wall_s"], a["max_wall_s"]))
    row("median CPU user+sys (s)", lambda a: "%.3f" % a["median_cpu_s"])
    row("peak RSS, max (MiB)", lambda a: fmt_mib(a["max_peak_rss_kib"]))
    row("  sampled VmHWM, main (MiB)", lambda a: fmt_mib(a["max_sampled_hwm_kib"]) if a["max_sampled_hwm_kib"] else "n/a")
    row("artifact size (MiB)", lambda a: "%.2f" % (a["artifact_bytes"] / MIB))
    row("compression ratio", lambda a: "%.2fx" % (stats["total_bytes"] / a["artifact_bytes"]))
    if cold:
        say("%-26s%24s" % ("cold run, fresh cache (s)", "%.3f" % cold["wall"]) + "   (clone + pack; peak RSS %s MiB)" % fmt_mib(cold["maxrss_kib"]))
        rep = cold.get("report") if isinstance(cold.get("report"), dict) else {}
        if "files" in rep:
            skipped = rep.get("skipped")
            say("artifact-mirror packed %s files%s; the repo has %d (git archive packs all, plus directories)"
                % (rep["files"], ", skipped %d" % len(skipped) if isinstance(skipped, list) else "",
                   stats["files"]))
    say("(%d timed run(s) per tool, order alternated; artifact-mirror runs use a warm cache)" % args.runs)
    say("")

    results = {}
    budget = RSS_BASE_BUDGET + stats["largest_file_bytes"]
    if o:
        ratio = o["median_wall_s"] / g["median_wall_s"]
        results["time_ratio"] = ratio
        results["time_pass"] = ratio <= 1.0
        results["rss_budget_bytes"] = budget
        results["rss_pass"] = o["max_peak_rss_kib"] * 1024 <= budget
        say("time ratio ours/git (median, warm): %.3f  (target <= 1.0)" % ratio)
        say("%s  time: artifact-mirror pack %.3fs vs git archive %.3fs"
            % ("PASS" if results["time_pass"] else "FAIL", o["median_wall_s"], g["median_wall_s"]))
        say("%s  RSS: artifact-mirror peak %s MiB vs budget %s MiB (100 MiB + largest file %.1f MiB)"
            % ("PASS" if results["rss_pass"] else "FAIL", fmt_mib(o["max_peak_rss_kib"]),
               fmt_mib(budget // 1024), stats["largest_file_bytes"] / MIB))
        if any(r["cached"] for r in our_runs):
            say("WARNING: some artifact-mirror runs reported cached=true; times are not re-packs")
    else:
        say("(--git-only: no artifact-mirror runs, no PASS/FAIL)")

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("stdout", "stderr", "report", "status", "maxrss")}

    summary.update({"runs": args.runs, "rss_floor_kib": floor["maxrss_kib"],
                    "git_archive": g, "artifact_mirror": o,
                    "artifact_mirror_cold": strip(cold) if cold else None,
                    "artifact_mirror_runs": [strip(r) for r in our_runs],
                    "git_archive_runs": [strip(r) for r in git_runs],
                    "targets": results})
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    failed = results and not (results["time_pass"] and results["rss_pass"])
    return 1 if (args.strict and failed) else 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, _terminate)   # clean up partial repo / work dir
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
