"""The Helm chart (deploy/helm/hubgate), rendered offline by the real `helm` and checked object by object.

Every rendered object is validated against the Kubernetes OpenAPI schemas of the oldest and newest
versions that kubernetes-validate bundles (strict: unknown fields fail). Then the properties that matter
to an operator are asserted on the objects themselves: probes, security context, secrets only by
reference, selectors that select, the grace period, and an environment that hubgate's own settings
loader accepts.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from .tools import CHART, ROOT, TEST_VALUES, helm_template, matches, one, render, tool

K8S_VERSIONS = ("1.25.0", kv_utils.latest_version())  # Chart.yaml: kubeVersion >= 1.25
POD_IP = "10.1.2.3"
SECRET_VALUES = ("p%40ss%24word", "s3cr3t$#value", "not-a-real-key", "not-a-real-fernet-key")

# Values for the variants rendered below.
EXISTING_SECRETS = ("--set", "database.url=", "--set", "database.existingSecret=pg-app",
                    "--set", "database.urlKey=uri", "--set", "database.passwordSecret.name=pg-app",
                    "--set", "s3.accessKeyId=", "--set", "s3.secretAccessKey=", "--set", "s3.existingSecret=s3-creds",
                    "--set", "keys.signingKey=", "--set", "keys.secretKey=", "--set", "keys.existingSecret=hubgate-keys",
                    "--set", "upstream.existingSecret=hf-token", "--set", "trustedKeys.existingConfigMap=low-keys",
                    "--set", "trustedKeys.existingConfigMapKeys[0]=low.pub")
EVERYTHING = ("--set", "serviceMonitor.enabled=true", "--set", "ingress.enabled=true",
              "--set", "ingress.hosts[0]=hubgate.example.internal", "--set", "upstream.token=hf_secret_token",
              "--set-string", "trustedKeys.files.low\\.pub=-----BEGIN PUBLIC KEY-----",
              "--set", "service.port=80", "--set", "env.HUBGATE_INSTANCE_NAME=high")
VARIANTS = {"test-values": (), "existing-secrets": EXISTING_SECRETS, "everything": EVERYTHING}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    return render(*EVERYTHING)


def deployments(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == "Deployment"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def pod_environ(objs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The environment the container would get: its ConfigMap, then its env (with $(VAR) expanded the
    kubelet's way), secrets read from the chart's Secrets or, for an existing Secret, a stand-in."""
    secrets = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "Secret"}
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    c = container(deployment)
    environ: dict[str, str] = {}
    for source in c.get("envFrom", []):
        environ.update(configmaps[source["configMapRef"]["name"]])
    for var in c.get("env", []):
        if "value" in var:
            environ[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: environ.get(m.group(1), m.group(0)), var["value"])
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            if ref["name"] in secrets:
                environ[var["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
            else:  # an existing Secret, outside the chart
                environ[var["name"]] = ("postgresql+psycopg://hubgate@pg:5432/hubgate"
                                        if var["name"] == "HUBGATE_DATABASE_URL" else "from-an-existing-secret")
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", var
            environ[var["name"]] = POD_IP
    return environ


# --- the chart is valid ------------------------------------------------------------------------------

def test_chart_lints_strictly() -> None:
    import subprocess

    proc = subprocess.run([tool("helm"), "lint", "--strict", str(CHART), "-f", str(TEST_VALUES)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_is_valid_for_kubernetes(variant: str) -> None:
    objs = render(*VARIANTS[variant])
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "ServiceAccount"} <= kinds
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD, without a schema in kubernetes-validate: see test_pdbs_service_and_service_monitor_…
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)  # raises with the path of the fault


def test_the_schema_check_is_not_vacuous(objects: list[dict[str, Any]]) -> None:
    api = one(objects, "Deployment", "-api")
    broken = yaml.safe_load(yaml.safe_dump(api))
    container(broken)["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_values_schema_refuses_a_misspelt_value() -> None:
    proc = helm_template("--set", "api.replica=3")
    assert proc.returncode != 0 and "replica" in proc.stderr


# --- the two Deployments ---------------------------------------------------------------------------

def test_api_has_readiness_on_readyz_and_liveness_on_healthz_with_an_allowed_host(objects: list[dict[str, Any]]) -> None:
    c = container(one(objects, "Deployment", "-api"))
    assert c["args"] == ["serve"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["port"] in ports
        assert {"name": "Host", "value": "localhost"} in get["httpHeaders"]  # else the Host allowlist says 400
    assert ports["http"] == 8080


def test_worker_is_a_separate_deployment_running_hubgate_worker(objects: list[dict[str, Any]]) -> None:
    api, worker = one(objects, "Deployment", "-api"), one(objects, "Deployment", "-worker")
    c = container(worker)
    assert c["args"] == ["worker"]
    assert c["image"] == container(api)["image"]
    assert "ports" not in c and "readinessProbe" not in c
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hubgate"]' in dockerfile  # so args ["worker"] runs `hubgate worker`
    # the API pods leave jobs to the worker Deployment
    assert pod_environ(objects, api)["HUBGATE_WORKER_IN_PROCESS"] == "false"


def test_pods_run_non_root_read_only_without_capabilities(objects: list[dict[str, Any]]) -> None:
    uid = int(re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M).group(1))
    for d in deployments(objects):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False  # HUBGATE_SERVICE_HOST & co would be refused as unknown settings
        c = container(d)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]  # writable scratch on a read-only root
        assert "emptyDir" in volumes[mounts[pod_environ(objects, d)["HUBGATE_DATA_DIR"]]]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (d["metadata"]["name"], kind)


def test_termination_grace_covers_the_shutdown_timeout() -> None:
    objs = render("--set", "shutdownTimeoutSeconds=120")
    api, worker = one(objs, "Deployment", "-api"), one(objs, "Deployment", "-worker")
    assert pod_environ(objs, api)["HUBGATE_SHUTDOWN_TIMEOUT_SECONDS"] == "120"
    assert pod_environ(objs, worker)["HUBGATE_SHUTDOWN_TIMEOUT_SECONDS"] == "120"
    pre_stop = int(container(api)["lifecycle"]["preStop"]["exec"]["command"][1])
    api_grace = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    worker_grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert 120 + pre_stop < api_grace <= 120 + pre_stop + 15
    assert 120 < worker_grace <= 135


# --- secrets -----------------------------------------------------------------------------------------

def test_secrets_are_referenced_never_inlined(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] != "Secret":
            text = yaml.safe_dump(obj)
            assert not [v for v in SECRET_VALUES if v in text], obj["metadata"]["name"]
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        assert not [k for k in cm["data"] if re.search(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|ACCESS_KEY", k)]
    for d in deployments(objects):
        env = {e["name"]: e for e in container(d)["env"]}
        for name in ("HUBGATE_DATABASE_URL", "HUBGATE_S3_ACCESS_KEY_ID", "HUBGATE_S3_SECRET_ACCESS_KEY"):
            assert set(env[name]) == {"name", "valueFrom"} and "secretKeyRef" in env[name]["valueFrom"]
    environ = pod_environ(objects, one(objects, "Deployment", "-api"))
    assert environ["HUBGATE_DATABASE_URL"] == "postgresql+psycopg://hubgate:p%40ss%24word@postgres.db.svc:5432/hubgate"
    assert environ["HUBGATE_S3_SECRET_ACCESS_KEY"] == "s3cr3t$#value"


def test_instance_keys_are_files_from_a_secret_readable_by_the_pod_user_only(objects: list[dict[str, Any]]) -> None:
    keys = one(objects, "Secret", "-keys")
    assert keys["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for d in deployments(objects):
        pod = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m for m in container(d)["volumeMounts"]}
        secret = volumes["keys"]["secret"]
        assert secret["secretName"] == keys["metadata"]["name"]
        assert secret["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == 10001
        assert mounts["keys"]["readOnly"] is True
        environ = pod_environ(objects, d)
        for var in ("HUBGATE_SIGNING_KEY_FILE", "HUBGATE_SECRET_KEY_FILE"):
            path = Path(environ[var])
            assert str(path.parent) == mounts["keys"]["mountPath"]
            assert path.name in {item["path"] for item in secret["items"]}


def test_existing_secrets_are_referenced_and_none_is_created() -> None:
    objs = render(*EXISTING_SECRETS)
    assert [o for o in objs if o["kind"] == "Secret"] == []
    for d in deployments(objs):
        env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container(d)["env"]}
        assert env["HUBGATE_DATABASE_URL"] == {"name": "pg-app", "key": "uri"}
        assert env["PGPASSWORD"] == {"name": "pg-app", "key": "password"}
        assert env["HUBGATE_S3_SECRET_ACCESS_KEY"] == {"name": "s3-creds", "key": "secret-access-key"}
        assert env["HUBGATE_UPSTREAM_TOKEN"] == {"name": "hf-token", "key": "upstream-token"}
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert volumes["keys"]["secret"]["secretName"] == "hubgate-keys"
        assert volumes["trusted-keys"]["configMap"]["name"] == "low-keys"
        assert pod_environ(objs, d)["HUBGATE_TRUSTED_KEYS"] == "/etc/hubgate/trusted/low.pub"
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"] == ["hubgate"]


@pytest.mark.parametrize(("unset", "message"), [
    (("--set", "database.url="), "database.existingSecret"),
    (("--set", "keys.secretKey="), "keys.existingSecret"),
    (("--set", "s3.secretAccessKey="), "s3.accessKeyId and s3.secretAccessKey"),
    (("--set", "env.HUBGATE_S3_SECRET_ACCESS_KEY=x"), "looks like a secret"),
    (("--set", "env.HUBGATE_S3_BUCKET=x"), "is set by the chart"),
])
def test_missing_or_misplaced_secrets_stop_the_render_with_a_reason(unset: tuple[str, ...], message: str) -> None:
    proc = helm_template(*unset)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


# --- selectors and the pods' settings ---------------------------------------------------------------

def test_pdbs_service_and_service_monitor_select_the_right_pods(everything: list[dict[str, Any]]) -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments(everything)}
    for d in deployments(everything):  # a Deployment's selector selects its own pods
        assert matches(d["spec"]["selector"]["matchLabels"], pods[d["metadata"]["name"]])
    pdbs = [o for o in everything if o["kind"] == "PodDisruptionBudget"]
    assert {p["metadata"]["name"] for p in pdbs} == {"hubgate-api", "hubgate-worker"}
    for pdb in pdbs:
        selected = [n for n, labels in pods.items() if matches(pdb["spec"]["selector"]["matchLabels"], labels)]
        assert selected == [pdb["metadata"]["name"]], (pdb["metadata"]["name"], selected)
    service = one(everything, "Service")
    assert [n for n, labels in pods.items() if matches(service["spec"]["selector"], labels)] == ["hubgate-api"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitor = one(everything, "ServiceMonitor")
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["hubgate"]}


def test_service_monitor_is_optional(objects: list[dict[str, Any]]) -> None:
    assert not [o for o in objects if o["kind"] in ("ServiceMonitor", "Ingress")]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_environment_is_accepted_by_hubgates_settings(variant: str) -> None:
    from api.settings import Settings, load

    objs = render(*VARIANTS[variant])
    for d in deployments(objs):
        environ = pod_environ(objs, d)
        unknown = {k for k in environ if k.startswith("HUBGATE_")} - {f"HUBGATE_{n.upper()}" for n in Settings.model_fields}
        assert not unknown, unknown
        settings = load(environ=environ)  # raises ConfigError naming the setting
        assert settings.storage == "s3" and settings.data_dir == Path("/data")
        assert settings.signing_key_file == Path("/etc/hubgate/keys/signing-key.pem")
        if d["metadata"]["name"].endswith("-api"):
            assert settings.host == "0.0.0.0"


def test_the_api_allows_the_hosts_that_probes_services_ingress_and_prometheus_send(everything: list[dict[str, Any]]) -> None:
    from api.edge import allowed_hosts
    from api.settings import load

    settings = load(environ=pod_environ(everything, one(everything, "Deployment", "-api")))
    exact = allowed_hosts(settings)[0]  # the Host values allowed exactly
    for host in ("localhost",                                   # the kubelet's probes (httpHeaders)
                 f"{POD_IP}:8080",                              # Prometheus, scraping the pod's address
                 "hubgate", "hubgate.hubgate.svc.cluster.local",   # in-cluster clients, service port 80
                 "hubgate.example.internal",                    # the Ingress host
                 "hubgate-alias.example.internal",              # values.allowedHosts
                 "hubgate.example.internal"):                   # the public URL
        assert host.encode() in exact, host
    assert settings.public_url == "https://hubgate.example.internal"
    assert settings.upstream_token == "hf_secret_token"
    assert settings.trusted_keys == [Path("/etc/hubgate/trusted/low.pub")]
    assert settings.instance_name == "high"
