#!/usr/bin/env python3
"""Renders every overlay under deploy/k8s/overlays with `kubectl kustomize`, validates it with
`kubernetes-validate --strict` and then checks what a schema cannot:

- config: each service container's environment (ConfigMaps, Secrets, env, downward API) is fed
  to the real binary's `--check-config` in a scratch copy of the pod's mounts; the binary must
  accept every value, and every key must be one the binary reads;
- probes: liveness/readiness/startup are gRPC probes on the health port the binary reports,
  the gRPC container port and the Services' target ports are the port it listens on, on all
  addresses; the preStop sleep plus the binary's drain grace fit the termination grace period;
- discovery: the order service's MESH_ZONE names headless Services with a `grpc` port;
- identity: each Deployment runs as the ServiceAccount named after it, and the certificate
  mounted where TLS_CERT points carries exactly spiffe://<TRUST_DOMAIN>/ns/<namespace>/sa/<it>,
  issued by the one mesh CA;
- network: the NetworkPolicies admit the mesh's call graph (EXPECTED_EDGES) and nothing more,
  evaluated over every pair of modelled peers and ports.

Then every fixture under deploy/k8s/tests/ (one deliberate fault each) must fail, with the
message its `expect` file names. Exit status 0 only if all of that holds.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.37.0"  # the newest schema kubernetes-validate ships (pinned in test-deps.sh)

SERVICES = {"order": 50051, "payment": 50052, "inventory": 50053, "shipping": 50054}
GATEWAY_PORT = 8080
METRICS_PORT = 9464
# Kinds kubernetes-validate has no schema for; check_certificates looks at them instead.
CRD_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
# Keys owned by work in flight elsewhere: accepted in a container's env although no binary
# here reads them yet. Remove an entry once its binary declares the key.
PENDING_KEYS = {"BROKER_URL": "the RabbitMQ transport"}
# Values of keys in Secrets the operator creates (prod): what --check-config is given instead.
EXTERNAL_SECRET_VALUES = {
    "DATABASE_URL": "postgres://ordermesh@database.invalid:5432/ordermesh",
    "BROKER_URL": "amqps://ordermesh@broker.invalid:5671/%2f",
}

# The mesh's call graph: (from, to, protocol, port). "pods" expands to every pod of the overlay,
# "services" to the four domain services, "outside" to every peer that is not a pod of the
# overlay, and "backing" to the in-cluster PostgreSQL/RabbitMQ pod when the overlay runs one,
# otherwise to any destination outside the overlay (prod: wherever DATABASE_URL points).
# Events travel inside the gRPC edges: order follows shipping's EventLogService/Subscribe
# stream over order -> shipping.
EXPECTED_EDGES = (
    [("gateway", s, "TCP", p) for s, p in SERVICES.items()]
    + [("order", s, "TCP", p) for s, p in SERVICES.items() if s != "order"]
    + [("pods", "kube-dns", proto, 53) for proto in ("UDP", "TCP")]
    + [("services", ("backing", "postgres"), "TCP", 5432)]
    + [("services", ("backing", "rabbitmq"), "TCP", p) for p in (5672, 5671)]
    + [("outside", "gateway", "TCP", GATEWAY_PORT)]
    + [("prometheus", w, "TCP", METRICS_PORT) for w in [*SERVICES, "gateway"]]
)


# ---------------------------------------------------------------------------------------------
# Rendering and schema


def kubectl() -> str:
    return os.environ.get("KUBECTL") or shutil.which("kubectl") or str(ROOT / ".deps/venv/bin/kubectl")


def render(kustomization: Path) -> tuple[str, list[dict]]:
    out = subprocess.run([kubectl(), "kustomize", str(kustomization)], capture_output=True, text=True)
    if out.returncode != 0:
        raise Failure([f"kubectl kustomize {kustomization} failed: {out.stderr.strip()}"])
    return out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d]


def validate_schema(text: str, docs: list[dict]) -> list[str]:
    validator = ROOT / ".deps/venv/bin/kubernetes-validate"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        out = subprocess.run([str(validator), "--strict", "--quiet", "-k", K8S_VERSION, f.name],
                             capture_output=True, text=True)
    errors = [line for line in out.stdout.splitlines() if line.startswith(("ERROR", "FATAL"))]
    if out.returncode != 0 and not errors:
        errors.append(f"kubernetes-validate exited {out.returncode}: {out.stderr.strip()}")
    # A resource without a schema is only a warning to kubernetes-validate; here it is an error
    # unless it is one of the CRDs checked below (a typo in apiVersion would otherwise pass).
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key in CRD_KINDS:
            continue
        missing = f"Couldn't find schema for kind {d.get('kind')} with api version {d.get('apiVersion')}"
        if missing in out.stdout:
            errors.append(f"{d.get('kind')}/{d['metadata'].get('name')}: no schema for {key[0]} {key[1]}")
    return [f"schema: {e}" for e in errors]


class Failure(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


# ---------------------------------------------------------------------------------------------
# The rendered objects


@dataclass
class Manifests:
    docs: list[dict]

    def of(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict | None:
        return next((d for d in self.of(kind) if d["metadata"]["name"] == name), None)


def ns_of(obj: dict) -> str:
    return obj["metadata"].get("namespace", "default")


def workloads(m: Manifests) -> list[dict]:
    return [d for d in m.of("Deployment")
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in ("service", "gateway")]


def container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def selects(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in values:
            return False
        if op == "NotIn" and k in labels and labels[k] in values:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


@dataclass
class Env:
    values: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)


def container_env(m: Manifests, dep: dict, errors: list[str]) -> Env:
    """The container's environment as the kubelet would build it."""
    c, name, env = container(dep), dep["metadata"]["name"], Env()

    def secret_value(secret: str, key: str) -> str | None:
        s = m.get("Secret", secret)
        if s is None:  # created by the operator (prod)
            if key in EXTERNAL_SECRET_VALUES:
                return EXTERNAL_SECRET_VALUES[key]
            errors.append(f"{name}: Secret {secret} is not rendered and {key} has no stand-in value")
            return None
        if key in (s.get("stringData") or {}):
            return s["stringData"][key]
        if key in (s.get("data") or {}):
            return base64.b64decode(s["data"][key]).decode()
        errors.append(f"{name}: Secret {secret} has no key {key}")
        return None

    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            cm = m.get("ConfigMap", src["configMapRef"]["name"])
            if cm is None:
                errors.append(f"{name}: envFrom ConfigMap {src['configMapRef']['name']} does not exist")
                continue
            for k, v in (cm.get("data") or {}).items():
                env.values[k], env.source[k] = v, f"ConfigMap {cm['metadata']['name']}"
        elif "secretRef" in src:
            s = m.get("Secret", src["secretRef"]["name"])
            for k in ((s or {}).get("data") or {}):
                env.values[k] = secret_value(src["secretRef"]["name"], k) or ""
                env.source[k] = f"Secret {src['secretRef']['name']}"
    for e in c.get("env") or []:
        k = e["name"]
        if "value" in e:
            # $(VAR) refers to variables defined before it, as the kubelet expands them.
            v = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda mt: env.values.get(mt.group(1), mt.group(0)), e["value"])
            env.values[k], env.source[k] = v, "env"
            continue
        ref = e.get("valueFrom") or {}
        if "secretKeyRef" in ref:
            v = secret_value(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            if v is not None:
                env.values[k], env.source[k] = v, f"Secret {ref['secretKeyRef']['name']}"
        elif "configMapKeyRef" in ref:
            cm = m.get("ConfigMap", ref["configMapKeyRef"]["name"]) or {}
            v = (cm.get("data") or {}).get(ref["configMapKeyRef"]["key"])
            if v is None:
                errors.append(f"{name}: {k} refers to a missing ConfigMap key")
            else:
                env.values[k], env.source[k] = v, f"ConfigMap {ref['configMapKeyRef']['name']}"
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env.values[k], env.source[k] = ns_of(dep), "downward API"
        elif (label := re.fullmatch(r"metadata\.labels\['([^']+)'\]", ref.get("fieldRef", {}).get("fieldPath", ""))):
            # A label the pod may not carry (e.g. one an admission plugin adds): the kubelet
            # gives an empty value then, and the binary must accept that too.
            labels = dep["spec"]["template"]["metadata"].get("labels") or {}
            env.values[k], env.source[k] = labels.get(label.group(1), ""), "downward API (pod label)"
        else:
            errors.append(f"{name}: {k}: unsupported valueFrom {ref}")
    return env


# ---------------------------------------------------------------------------------------------
# Certificates (cert-manager CRDs, which have no schema here)


def spiffe_of(cert: dict) -> str | None:
    uris = cert["spec"].get("uris") or []
    return uris[0] if len(uris) == 1 else None


def certificate_for_secret(m: Manifests, secret: str) -> dict | None:
    return next((c for c in m.of("Certificate") if c["spec"].get("secretName") == secret), None)


def check_certificates(m: Manifests, errors: list[str]) -> None:
    issuers = {i["metadata"]["name"]: i for i in m.of("Issuer")}
    for cert in m.of("Certificate"):
        n, spec = cert["metadata"]["name"], cert["spec"]
        if not spec.get("secretName"):
            errors.append(f"Certificate {n}: no secretName")
        ref = spec.get("issuerRef") or {}
        if ref.get("kind", "Issuer") == "Issuer" and ref.get("name") not in issuers:
            errors.append(f"Certificate {n}: issuer {ref.get('name')} is not defined")
        if spec.get("isCA"):
            continue
        usages = set(spec.get("usages") or [])
        for u in ("server auth", "client auth"):
            if u not in usages:
                errors.append(f"Certificate {n}: usages lack '{u}' (mesh leaves are both)")
        issuer = issuers.get(ref.get("name"), {})
        ca_secret = (issuer.get("spec", {}).get("ca") or {}).get("secretName")
        ca = certificate_for_secret(m, ca_secret) if ca_secret else None
        if not ca or not ca["spec"].get("isCA"):
            errors.append(f"Certificate {n}: not issued by the mesh CA (an Issuer of type ca whose Secret comes from an isCA Certificate)")


# ---------------------------------------------------------------------------------------------
# A service container: config, probes, identity


def mount_for(c: dict, path: str) -> dict | None:
    best = None
    for vm in c.get("volumeMounts") or []:
        mp = vm["mountPath"].rstrip("/")
        if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best["mountPath"])):
            best = vm
    return best


def simulate_mounts(m: Manifests, dep: dict, root: Path, bin_dir: Path, errors: list[str]) -> None:
    """Writes what each volume would hold at its mountPath under `root`."""
    spec, c, name = dep["spec"]["template"]["spec"], container(dep), dep["metadata"]["name"]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for vm in c.get("volumeMounts") or []:
        v = volumes.get(vm["name"])
        target = root / vm["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if v is None:
            errors.append(f"{name}: volumeMount {vm['name']} has no volume")
        elif "secret" in v:
            secret = v["secret"]["secretName"]
            cert = certificate_for_secret(m, secret)
            if cert is not None:
                write_issued(cert, target, bin_dir, errors)
            elif m.get("Secret", secret) is not None:
                for k, val in (m.get("Secret", secret).get("data") or {}).items():
                    (target / k).write_bytes(base64.b64decode(val))
            else:
                errors.append(f"{name}: volume {vm['name']}: Secret {secret} is neither rendered nor issued by a Certificate")
        elif "configMap" in v:
            cm = m.get("ConfigMap", v["configMap"]["name"])
            if cm is None:
                errors.append(f"{name}: volume {vm['name']}: ConfigMap {v['configMap']['name']} does not exist")
                continue
            for k, val in (cm.get("data") or {}).items():
                (target / k).write_text(val)


def write_issued(cert: dict, target: Path, bin_dir: Path, errors: list[str]) -> None:
    """tls.crt, tls.key and ca.crt as cert-manager would write them, for the cert's SPIFFE id."""
    sid = spiffe_of(cert) or ""
    parsed = re.fullmatch(r"spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)", sid)
    if not parsed:
        errors.append(f"Certificate {cert['metadata']['name']}: '{sid}' is not one spiffe://<domain>/ns/<ns>/sa/<name> URI")
        return
    td, ns, sa = parsed.groups()
    scratch = target.parent / f".issue-{sa}"
    out = subprocess.run([str(bin_dir / "mesh-certs"), "--dir", str(scratch), "--trust-domain", td,
                          "--namespace", ns, sa], capture_output=True, text=True)
    if out.returncode != 0:
        errors.append(f"mesh-certs failed: {out.stderr.strip()}")
        return
    shutil.copy(scratch / f"{sa}.pem", target / "tls.crt")
    shutil.copy(scratch / f"{sa}-key.pem", target / "tls.key")
    shutil.copy(scratch / "ca.pem", target / "ca.crt")


def run_check_config(binary: Path, env: Env, root: Path) -> tuple[dict | None, str]:
    values = {k: (str(root) + v if v.startswith("/") else v) for k, v in env.values.items()}
    out = subprocess.run([str(binary.resolve()), "--check-config"], env=values, capture_output=True, text=True,
                         timeout=30, cwd=root)
    if out.returncode != 0:
        lines = (out.stderr.strip() or out.stdout.strip()).splitlines() or ["(no output)"]
        return None, " / ".join(l for l in lines if l.strip() and not l.startswith(("For more", "Usage:"))).removeprefix("Error: ")
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def port_number(c: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in c.get("ports") or [] if p.get("name") == port), None)


def check_grpc_probes(m: Manifests, name: str, ns: str, pod: dict, c: dict, report: dict, listen_port: int, errors: list[str]) -> None:
    grpc_port = port_number(c, "grpc")
    if grpc_port != listen_port:
        errors.append(f"{name}: container port 'grpc' is {grpc_port}, the binary listens on {listen_port}")
    for svc in m.of("Service"):
        if ns_of(svc) == ns and selects({"matchLabels": svc["spec"].get("selector") or {}}, pod["metadata"]["labels"]):
            for p in svc["spec"]["ports"]:
                if p.get("name") == "grpc" and port_number(c, p.get("targetPort", p["port"])) != listen_port:
                    errors.append(f"{name}: Service {svc['metadata']['name']} port grpc targets {p.get('targetPort')}, not {listen_port}")
    health = report.get("health_listen")
    health_port = int(health.rsplit(":", 1)[1]) if health else None
    if report.get("mtls") and not health:
        errors.append(f"{name}: HEALTH_LISTEN_ADDR is not set: the kubelet's gRPC probes cannot pass mTLS")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(kind)
        if probe is None:
            if kind != "startupProbe":
                errors.append(f"{name}: no {kind}")
            continue
        if "grpc" not in probe:
            errors.append(f"{name}: {kind} is not a gRPC (grpc.health.v1) probe")
            continue
        port = probe["grpc"]["port"]
        if port != health_port:
            errors.append(f"{name}: {kind} probes port {port}, the binary serves plaintext health on {health_port}")
        service = probe["grpc"].get("service", "")
        if kind == "readinessProbe" and service == "liveness":
            errors.append(f"{name}: readinessProbe asks for 'liveness', which ignores the database")
        if kind != "readinessProbe" and service != "liveness":
            errors.append(f"{name}: {kind} asks for {service!r}: a database outage would restart the pod (use 'liveness')")



def check_http_probes(name: str, c: dict, report: dict, listen_port: int, errors: list[str]) -> None:
    """The gateway speaks HTTP: its probes are HTTP GETs of the paths it reports, on its port."""
    http_port = port_number(c, "http")
    if http_port != listen_port:
        errors.append(f"{name}: container port 'http' is {http_port}, the binary listens on {listen_port}")
    paths = report.get("http_health") or {}
    for kind, want in (("livenessProbe", paths.get("liveness")), ("readinessProbe", paths.get("readiness")),
                       ("startupProbe", paths.get("liveness"))):
        probe = c.get(kind)
        if probe is None:
            if kind != "startupProbe":
                errors.append(f"{name}: no {kind}")
            continue
        get = probe.get("httpGet")
        if get is None:
            errors.append(f"{name}: {kind} is not an HTTP probe of the gateway's health paths")
            continue
        if port_number(c, get.get("port")) != listen_port:
            errors.append(f"{name}: {kind} probes port {get.get('port')}, the binary listens on {listen_port}")
        if get.get("path") != want:
            errors.append(f"{name}: {kind} asks for {get.get('path')!r}, the binary serves {want!r}")


def check_workload(m: Manifests, dep: dict, bin_dir: Path, errors: list[str], notes: list[str]) -> None:
    name, ns = dep["metadata"]["name"], ns_of(dep)
    pod = dep["spec"]["template"]
    spec, c = pod["spec"], container(dep)
    is_gateway = name == "gateway"
    env = container_env(m, dep, errors)

    # Identity: the ServiceAccount is the SPIFFE name, and the mounted certificate says so.
    sa = spec.get("serviceAccountName")
    if sa != name:
        errors.append(f"{name}: runs as ServiceAccount {sa!r}, not {name!r} (its mesh identity)")
    if not any(s["metadata"]["name"] == sa and ns_of(s) == ns for s in m.of("ServiceAccount")):
        errors.append(f"{name}: ServiceAccount {sa} does not exist in {ns}")
    td = env.values.get("TRUST_DOMAIN", "ordermesh.local")
    if env.values.get("MESH_NAMESPACE", ns) != ns:
        errors.append(f"{name}: MESH_NAMESPACE={env.values['MESH_NAMESPACE']} but it runs in namespace {ns}")
    cert_path = env.values.get("TLS_CERT")
    if not cert_path:
        errors.append(f"{name}: TLS_CERT is not set (a mounted certificate is expected)")
    else:
        vm = mount_for(c, cert_path)
        vol = next((v for v in spec.get("volumes") or [] if vm and v["name"] == vm["name"]), None)
        secret = (vol or {}).get("secret", {}).get("secretName")
        cert = certificate_for_secret(m, secret) if secret else None
        want = f"spiffe://{td}/ns/{ns}/sa/{sa}"
        if cert is None:
            errors.append(f"{name}: TLS_CERT {cert_path} is not in a Secret volume issued by a Certificate")
        else:
            if spiffe_of(cert) != want:
                errors.append(f"{name}: Certificate {cert['metadata']['name']} has URI SANs {cert['spec'].get('uris')}, want exactly [{want}]")
            if name not in (cert["spec"].get("dnsNames") or []):
                errors.append(f"{name}: Certificate {cert['metadata']['name']} lacks the DNS name {name} that mesh clients verify")

    # Security context the images are built for.
    sc, psc = c.get("securityContext") or {}, spec.get("securityContext") or {}
    if not sc.get("readOnlyRootFilesystem") or not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        errors.append(f"{name}: needs readOnlyRootFilesystem and runAsNonRoot")

    binary = bin_dir / ("ordermesh-gateway" if is_gateway else name)
    if not binary.exists():
        errors.append(f"{name}: binary {binary} not built")
        return
    with tempfile.TemporaryDirectory(prefix=f"deploy-check-{name}-") as tmp:
        root = Path(tmp)
        simulate_mounts(m, dep, root, bin_dir, errors)
        report, refusal = run_check_config(binary, env, root)
    if report is None:
        errors.append(f"{name}: the {name} binary refuses its configuration: {refusal}")
        return

    # Every key is a setting the binary reads.
    reads = set(report["reads"])
    for k in sorted(env.values):
        if k not in reads and k not in PENDING_KEYS:
            errors.append(f"{name}: {k} ({env.source[k]}) is not a setting the {name} binary reads")

    # Ports: where the binary really listens.
    listen = report["listen"].rsplit(":", 1)
    listen_ip, listen_port = listen[0].strip("[]"), int(listen[1])
    if not ipaddress.ip_address(listen_ip).is_unspecified:
        errors.append(f"{name}: listens on {report['listen']}, unreachable from other pods (use 0.0.0.0:{listen_port})")
    if is_gateway:
        check_http_probes(name, c, report, listen_port, errors)
    else:
        check_grpc_probes(m, name, ns, pod, c, report, listen_port, errors)

    # Drain: the endpoints are gone before SIGTERM, and the grace period outlasts the drain.
    pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    drain = report["shutdown_grace_ms"] / 1000
    if pre < 5:
        errors.append(f"{name}: preStop sleep of {pre}s: the pod may get calls after SIGTERM (use >= 5s)")
    if grace < pre + drain:
        errors.append(f"{name}: terminationGracePeriodSeconds {grace} < preStop {pre}s + SHUTDOWN_GRACE {drain:g}s")

    # Discovery: order finds its participants as SRV _grpc._tcp.<service>.<MESH_ZONE>.
    if name == "order" and "MESH_DNS" in env.values:
        zone = env.values.get("MESH_ZONE", "mesh.local.")
        if env.values["MESH_DNS"] != "system":
            errors.append(f"order: MESH_DNS={env.values['MESH_DNS']}: in a cluster use 'system' (the pod's resolv.conf)")
        if zone.rstrip(".") != f"{ns}.svc.cluster.local":
            errors.append(f"order: MESH_ZONE={zone} is not {ns}.svc.cluster.local.")
        for p in SERVICES:
            if p == "order":
                continue
            svc = m.get("Service", p)
            ok = (svc is not None and svc["spec"].get("clusterIP") == "None"
                  and any(x.get("name") == "grpc" and x.get("protocol", "TCP") == "TCP" for x in svc["spec"]["ports"]))
            if not ok:
                errors.append(f"order: no headless Service {p} with a TCP port named grpc, so no SRV _grpc._tcp.{p}.{zone}")


# ---------------------------------------------------------------------------------------------
# NetworkPolicies


@dataclass
class Peer:
    name: str
    namespace: str
    labels: dict
    ports: set  # {(protocol, port)}
    ip: str
    in_mesh: bool  # a pod of this overlay (its own policies apply)


def peers_of(m: Manifests) -> list[Peer]:
    out, n = [], 0
    for d in m.of("Deployment") + m.of("StatefulSet"):
        n += 1
        labels = d["spec"]["template"]["metadata"]["labels"]
        ports = {(p.get("protocol", "TCP"), p["containerPort"])
                 for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
        out.append(Peer(labels.get("app.kubernetes.io/name", d["metadata"]["name"]), ns_of(d), labels, ports,
                        f"10.244.0.{n}", True))
    out += [
        Peer("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {("UDP", 53), ("TCP", 53)}, "10.244.1.1", False),
        Peer("ingress-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, {("TCP", 443)}, "10.244.1.2", False),
        Peer("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, {("TCP", 9090)}, "10.244.1.3", False),
        Peer("elsewhere", "default", {"app": "unrelated"}, {("TCP", 8080), ("TCP", 5432)}, "10.244.1.4", False),
        # A host outside the cluster: the production database and broker, or anything else.
        Peer("external", "", {}, {("TCP", 5432), ("TCP", 5672), ("TCP", 5671), ("TCP", 443)}, "203.0.113.10", False),
    ]
    return out


def peer_matches(rule_peer: dict, peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in rule_peer:
        b = rule_peer["ipBlock"]
        ip = ipaddress.ip_address(peer.ip)
        return ip in ipaddress.ip_network(b["cidr"]) and not any(ip in ipaddress.ip_network(x) for x in b.get("except") or [])
    if not peer.namespace:
        return False  # selectors only select pods
    if "namespaceSelector" in rule_peer:
        if not selects(rule_peer["namespaceSelector"], {"kubernetes.io/metadata.name": peer.namespace}):
            return False
    elif peer.namespace != policy_ns:
        return False
    return "podSelector" not in rule_peer or selects(rule_peer["podSelector"], peer.labels)


def port_matches(rule: dict, dst: Peer, proto: str, port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != proto:
            continue
        if "port" not in p:
            return True
        want = p["port"]
        if isinstance(want, str):
            return False  # named ports are not used here; treat as no match to stay strict
        if want <= port <= p.get("endPort", want):
            return True
    return False


def allowed(policies: list[dict], src: Peer, dst: Peer, proto: str, port: int) -> bool:
    def direction(pod: Peer, other: Peer, kind: str, key: str, peers_key: str) -> bool:
        if not pod.in_mesh:
            return True  # policies of other namespaces are not modelled: they allow
        selecting = [p for p in policies if ns_of(p) == pod.namespace
                     and selects(p["spec"].get("podSelector") or {}, pod.labels)
                     and kind in p["spec"].get("policyTypes", ["Ingress"])]
        if not selecting:
            return True
        for p in selecting:
            for rule in p["spec"].get(key) or []:
                peers = rule.get(peers_key)
                if (not peers or any(peer_matches(rp, other, ns_of(p)) for rp in peers)) and port_matches(rule, dst, proto, port):
                    return True
        return False

    return (direction(src, dst, "Egress", "egress", "to")
            and direction(dst, src, "Ingress", "ingress", "from"))


def expected_edges(peers: list[Peer]) -> set:
    names = {p.name for p in peers}
    groups = {
        "pods": [p.name for p in peers if p.in_mesh],
        "services": [s for s in SERVICES if s in names],
        "outside": [p.name for p in peers if not p.in_mesh],
    }
    out = set()
    for src, dst, proto, port in EXPECTED_EDGES:
        if isinstance(dst, tuple):  # ("backing", in-cluster name)
            dsts = [dst[1]] if dst[1] in names else groups["outside"]
        else:
            dsts = [dst]
        for d in dsts:
            listening = next((p for p in peers if p.name == d), None)
            if listening is None or (proto, port) not in listening.ports:
                continue
            out |= {(s, d, proto, port) for s in groups.get(src, [src]) if s in names and s != d}
    return out


def check_network(m: Manifests, errors: list[str]) -> int:
    peers = peers_of(m)
    policies = m.of("NetworkPolicy")
    actual = set()
    for src in peers:
        for dst in peers:
            if src is dst or not (src.in_mesh or dst.in_mesh):
                continue
            for proto, port in sorted(dst.ports):
                if allowed(policies, src, dst, proto, port):
                    actual.add((src.name, dst.name, proto, port))
    want = expected_edges(peers)
    for e in sorted(actual - want):
        errors.append(f"network: {e[0]} -> {e[1]} {e[2]}/{e[3]} is allowed but not in the call graph")
    for e in sorted(want - actual):
        errors.append(f"network: {e[0]} -> {e[1]} {e[2]}/{e[3]} is in the call graph but denied")
    return len(actual)


# ---------------------------------------------------------------------------------------------
# Cross-references a schema cannot see


def check_references(m: Manifests, overlay: str, errors: list[str]) -> None:
    deployments = {d["metadata"]["name"]: d for d in m.of("Deployment")}
    for hpa in m.of("HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            errors.append(f"HPA {hpa['metadata']['name']} scales a missing Deployment")
    for pdb in m.of("PodDisruptionBudget"):
        if not any(selects(pdb["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in deployments.values()):
            errors.append(f"PDB {pdb['metadata']['name']} selects no pods")
    for ing in m.of("Ingress"):
        for rule in ing["spec"].get("rules") or []:
            for path in rule["http"]["paths"]:
                b = path["backend"]["service"]
                svc = m.get("Service", b["name"])
                if svc is None or not any(p.get("name") == b["port"].get("name") or p["port"] == b["port"].get("number") for p in svc["spec"]["ports"]):
                    errors.append(f"Ingress {ing['metadata']['name']}: backend {b} does not exist")
    if overlay == "prod":
        for d in workloads(m):
            if d["spec"].get("replicas", 1) < 2:
                errors.append(f"prod: Deployment {d['metadata']['name']} has fewer than 2 replicas")
        for hpa in m.of("HorizontalPodAutoscaler"):
            if hpa["spec"].get("minReplicas", 1) < 2:
                errors.append(f"prod: HPA {hpa['metadata']['name']} may scale below 2 replicas")
        if m.of("StatefulSet"):
            errors.append("prod: runs StatefulSets, but PostgreSQL and RabbitMQ are external in prod")


# ---------------------------------------------------------------------------------------------


def check(kustomization: Path, bin_dir: Path) -> tuple[list[str], list[str], int]:
    """All checks of one kustomization: (errors, notes, number of resources)."""
    text, docs = render(kustomization)
    errors = validate_schema(text, docs)
    notes: list[str] = []
    m = Manifests(docs)
    check_certificates(m, errors)
    for dep in workloads(m):
        check_workload(m, dep, bin_dir, errors, notes)
    edges = check_network(m, errors)
    notes.append(f"{edges} allowed connections, all in the call graph" if not any(e.startswith("network:") for e in errors) else "")
    check_references(m, kustomization.name, errors)
    return errors, [n for n in notes if n], len(docs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug")
    ap.add_argument("kustomizations", nargs="*", type=Path,
                    help="check these only (default: every overlay, then every fixture must fail)")
    args = ap.parse_args()
    passed = failed = 0
    targets = args.kustomizations or sorted((ROOT / "deploy/k8s/overlays").iterdir())
    for k in targets:
        try:
            errors, notes, n = check(k, args.bin_dir)
        except Failure as f:
            errors, notes, n = f.errors, [], 0
        if errors:
            failed += 1
            print(f"FAIL {k.relative_to(ROOT) if k.is_absolute() else k}")
            for e in errors:
                print(f"  - {e}")
        else:
            passed += 1
            print(f"ok   {k.relative_to(ROOT) if k.is_absolute() else k}: {n} resources valid against Kubernetes {K8S_VERSION} (strict)")
        for note in notes:
            print(f"       {note}")
    if not args.kustomizations:
        for fixture in sorted((ROOT / "deploy/k8s/tests").iterdir()):
            expect = (fixture / "expect").read_text().strip()
            try:
                errors, _, _ = check(fixture, args.bin_dir)
            except Failure as f:
                errors = f.errors
            hit = next((e for e in errors if expect in e), None)
            if hit:
                passed += 1
                print(f"ok   fixture {fixture.name} is refused: {hit}")
            else:
                failed += 1
                print(f"FAIL fixture {fixture.name} should be refused with '{expect}', got: {errors or 'no error'}")
    print(f"deploy-check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
