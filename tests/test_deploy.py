"""Deployment artefacts: the Helm chart rendered and linted by Helm's own Go engine (helm-python-sdk),
both Dockerfiles linted by hadolint, and the Grafana dashboard and alert rules checked against the
metric names the real service exposes on /metrics."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import helm_python as helm
import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "k8s" / "reprank"
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
RELEASE, NAMESPACE = "reprank", "rag"
GPU_VALUES = yaml.safe_load((CHART / "values-gpu-cluster.yaml").read_text())
UID = 10001  # the images' user (ARG UID in both Dockerfiles) = the chart's runAsUser


def merged(*layers: dict) -> dict:
    """Values files layered as `helm -f a -f b` layers them (maps merge, everything else replaces)."""
    out: dict = {}
    for layer in layers:
        out = _merge(out, layer)
    return out


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def render(*layers: dict) -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(merged(*layers), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = find(docs, kind, name)
    return doc


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def pod_specs(docs: list[dict]) -> list[dict]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    return render()


@pytest.fixture(scope="module")
def gpu_docs() -> list[dict]:
    return render(GPU_VALUES)


def test_chart_lints_clean_for_both_values_files():
    for values in ({}, GPU_VALUES):
        report = helm.lint(CHART, values, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        # The Qdrant subchart is fetched by `helm dependency update`, which needs the internet; the
        # dependency is condition-gated, so only this warning may remain.
        assert [m["error"] for m in problems] == ["chart directory is missing these dependencies: qdrant"], report
        assert not report["errors"], report


def test_default_values_run_one_process_with_the_embedded_store(default_docs):
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "PersistentVolumeClaim", "Service",
                     "ServiceAccount"], kinds
    dep = one(default_docs, "Deployment", "reprank-gateway")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["serve", "--role", "all"] and c["image"] == "reprank:0.1.0"
    env = env_of(c)
    assert env["REPRANK_DATA_DIR"] == "/data" and "REPRANK_QDRANT_URL" not in env
    assert env["HF_HUB_OFFLINE"] == "1" and env["REPRANK_MODEL_CACHE"] == "/models/cache"
    assert "nvidia.com/gpu" not in json.dumps(c["resources"])
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "reprank-data"
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "reprank-models"
    assert {p["metadata"]["name"] for p in find(default_docs, "PersistentVolumeClaim")} == {"reprank-data",
                                                                                            "reprank-models"}
    svc = one(default_docs, "Service", "reprank")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_probes_and_non_root_everywhere(default_docs, gpu_docs):
    indexer = render(GPU_VALUES, {"indexer": {"enabled": True}})
    specs = pod_specs(default_docs) + pod_specs(gpu_docs) + pod_specs(indexer)
    assert len(specs) == 1 + 3 + 4
    for spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == UID and psc["fsGroup"] == UID
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/models"}
            if c["name"] == "indexer":
                assert "readinessProbe" not in c
                continue
            assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_gpu_cluster_gateway_workers_and_qdrant(gpu_docs):
    deps = {d["metadata"]["name"]: d for d in find(gpu_docs, "Deployment")}
    assert set(deps) == {"reprank-gateway", "reprank-encoder", "reprank-reranker"}
    services = {s["metadata"]["name"]: s for s in find(gpu_docs, "Service")}
    for name, dep in deps.items():  # each Deployment has a Service that selects exactly its pods
        svc = services[name.removesuffix("-gateway")]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
        assert svc["spec"]["selector"].items() <= labels.items()

    gw = deps["reprank-gateway"]
    assert "replicas" not in gw["spec"]  # the HPA owns it
    (c,) = gw["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["serve", "--role", "gateway"] and c["image"] == "ghcr.io/your-org/reprank:0.1.0"
    env = env_of(c)
    assert env["REPRANK_QDRANT_URL"] == "http://reprank-qdrant:6333"
    assert env["REPRANK_QDRANT_API_KEY"] == {"secretKeyRef": {"name": "reprank-qdrant-key", "key": "api-key"}}
    assert env["REPRANK_ENCODER_URLS"] == "http://reprank-encoder:8000"
    assert env["REPRANK_RERANKER_URLS"] == "http://reprank-reranker:8000"
    worker_key = {"secretKeyRef": {"name": "reprank-worker-key", "key": "api-key"}}
    assert env["REPRANK_WORKER_API_KEY"] == worker_key
    assert "REPRANK_DATA_DIR" not in env and "REPRANK_MODEL" not in env
    assert (env["REPRANK_QDRANT_QUANTIZATION"], env["REPRANK_QDRANT_SHARD_NUMBER"]) == ("int8", "6")
    # API keys: the existing Secret, mounted as a file the gateway reads
    assert env["REPRANK_API_KEYS_FILE"] == "/etc/reprank/api-keys/api-keys"
    volumes = {v["name"]: v for v in gw["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"] == {"name": "api-keys", "secret": {"secretName": "reprank-api-keys"}}
    assert not find(gpu_docs, "Secret")  # existingSecret: the chart creates none

    hpa = one(gpu_docs, "HorizontalPodAutoscaler", "reprank-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "reprank-gateway"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}

    for name, model, preset in (("encoder", "/models/repllama-v1-7b-lora-passage", "repllama"),
                                ("reranker", "/models/rankllama-v1-7b-lora-passage", "rankllama")):
        spec = deps[f"reprank-{name}"]["spec"]["template"]["spec"]
        (w,) = spec["containers"]
        assert w["args"] == ["serve", "--role", "worker"] and w["image"] == "ghcr.io/your-org/reprank:0.1.0-cuda"
        assert w["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        env = env_of(w)
        field, other = ("MODEL", "RERANKER") if name == "encoder" else ("RERANKER", "MODEL")
        assert env[f"REPRANK_{field}"] == model and env[f"REPRANK_{field}_PRESET"] == preset
        assert env[f"REPRANK_{other}"] == "none"  # a worker serves one model
        assert env["REPRANK_API_KEYS"] == worker_key  # and only to the gateway
        assert "REPRANK_QDRANT_URL" not in env and env["REPRANK_MODEL_CACHE"] == "/tmp/model-cache"
        assert env["REPRANK_BASE"] == "/models/Llama-2-7b-hf" and env["REPRANK_DEVICE"] == "cuda"
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in w["volumeMounts"]
        models = {v["name"]: v for v in spec["volumes"]}["models"]
        assert models["persistentVolumeClaim"]["claimName"] == "reprank-models"

    pdbs = {p["metadata"]["name"]: p for p in find(gpu_docs, "PodDisruptionBudget")}
    assert set(pdbs) == {"reprank-gateway", "reprank-encoder", "reprank-reranker"}
    for name, pdb in pdbs.items():
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == deps[name]["spec"]["selector"]["matchLabels"]


def test_service_monitor_rules_and_dashboard(gpu_docs):
    sm = one(gpu_docs, "ServiceMonitor", "reprank")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    scraped = [s for s in find(gpu_docs, "Service") if sm["spec"]["selector"]["matchLabels"].items()
               <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in scraped} == {"reprank", "reprank-encoder", "reprank-reranker"}
    assert all(sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in s["spec"]["ports"]} for s in scraped)

    rules = {r["alert"]: r for r in alert_rules(gpu_docs)}
    assert set(rules) >= {"RepRankHighP99Latency", "RepRankHigh5xxRate", "RepRankQueueSaturated",
                          "RepRankWorkerFailures", "RepRankBudgetLimitedSearches", "RepRankCacheCollapse"}
    p99 = rules["RepRankHighP99Latency"]["expr"]
    assert p99.startswith("histogram_quantile(0.99,") and "reprank_request_seconds_bucket{" in p99
    assert p99.endswith("> 2") and 'namespace="rag"' in p99
    assert 'status=~"5.."' in rules["RepRankHigh5xxRate"]["expr"]
    assert rules["RepRankQueueSaturated"]["expr"].endswith("> 0.8")
    for rule in rules.values():
        assert metric_names(rule["expr"]), rule["expr"]  # parses as PromQL
        assert "{{" not in rule["expr"]  # Helm's own template syntax must not leak into PromQL
        assert "{{ $labels." in rule["annotations"]["summary"]  # left for Prometheus to fill in

    cm = one(gpu_docs, "ConfigMap", "reprank-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "reprank"}
    dash = json.loads(cm["data"]["reprank.json"])
    assert dash["uid"] == "reprank" and len(dash["panels"]) > 10
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("request rate", "latency per route", "latency per stage", "queue depth", "tokens per batch",
                  "padding", "throughput", "rejections", "errors by status", "worker call latency",
                  "worker failures", "cache hit ratio", "bytes vs limit", "reranked depth", "budget-limited"):
        assert topic in titles, topic
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    cells = {}  # Grafana's 24-column grid: no two panels share a cell
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
            assert cell not in cells, (p["title"], cells.get(cell))
            cells[cell] = p["title"]
    for expr in dashboard_exprs(dash):
        assert metric_names(grafana_to_promql(expr)), expr


def test_indexer_job_and_created_api_key_secret():
    docs = render(GPU_VALUES, {"indexer": {"enabled": True, "engine": "ray", "rayAddress": "ray://head:10001"},
                               "apiKeys": {"existingSecret": "", "keys": ["k1", "k2"]}})
    job = one(docs, "Job", "reprank-indexer-r1")  # a new Job per release revision
    assert "annotations" not in job["metadata"]
    hook = one(render(GPU_VALUES, {"indexer": {"enabled": True, "hook": True}}), "Job", "reprank-indexer")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (c,) = spec["containers"]
    assert c["args"] == ["index", "--corpus", "/corpus/msmarco-passage/corpus.jsonl.gz", "--collection", "msmarco",
                         "--no-progress", "--engine", "ray"]
    env = env_of(c)
    assert env["REPRANK_QDRANT_URL"] == "http://reprank-qdrant:6333" and env["RAY_ADDRESS"] == "ray://head:10001"
    assert env["REPRANK_MODEL"] == "/models/repllama-v1-7b-lora-passage" and env["REPRANK_MODEL_PRESET"] == "repllama"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["image"].endswith("-cuda")
    assert {v["name"]: v for v in spec["volumes"]}["corpus"] == {
        "name": "corpus", "persistentVolumeClaim": {"claimName": "corpora"}}

    secret = one(docs, "Secret", "reprank-api-keys")
    assert secret["stringData"]["api-keys"].split() == ["k1", "k2"]
    gw = one(docs, "Deployment", "reprank-gateway")["spec"]["template"]
    assert "checksum/api-keys" in gw["metadata"]["annotations"]  # a key change rolls the gateway
    assert {"name": "api-keys", "secret": {"secretName": "reprank-api-keys"}} in gw["spec"]["volumes"]


@pytest.mark.parametrize("values, message", [
    ({"gateway": {"autoscaling": {"enabled": True}}}, "embedded store is one process"),
    ({"gateway": {"replicas": 2}}, "embedded store is one process"),
    ({"indexer": {"enabled": True}}, "indexer.enabled needs a Qdrant server"),
    ({"gateway": {"role": "gateway", "autoscaling": {"enabled": True}}, "encoder": {"enabled": True}},
     "embedded store is one process"),
    ({"gateway": {"role": "gateway"}}, "needs encoder workers"),
    ({"gateway": {"role": "worker"}}, "gateway.role must be all or gateway"),
    ({"apiKeys": {"enabled": True}}, "apiKeys.enabled needs"),
    ({"models": {"volume": {"type": "nfs"}}}, "models.volume.type must be"),
])
def test_values_that_cannot_work_fail_at_render(values, message):
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def test_indexer_on_the_embedded_store_while_the_server_is_scaled_to_zero():
    docs = render({"gateway": {"replicas": 0}, "indexer": {"enabled": True, "corpus": "/models/corpus.jsonl"}})
    assert one(docs, "Deployment", "reprank-gateway")["spec"]["replicas"] == 0
    spec = one(docs, "Job", "reprank-indexer-r1")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = env_of(c)
    assert env["REPRANK_DATA_DIR"] == "/data" and "REPRANK_QDRANT_URL" not in env
    assert c["args"][:3] == ["index", "--corpus", "/models/corpus.jsonl"] and "nvidia.com/gpu" not in str(c)
    assert {v["name"]: v for v in spec["volumes"]}["data"]["persistentVolumeClaim"]["claimName"] == "reprank-data"


def test_metrics_on_a_port_of_their_own(gpu_docs):
    docs = render(GPU_VALUES, {"metrics": {"port": 9090}})
    sm = one(docs, "ServiceMonitor", "reprank")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    for dep in find(docs, "Deployment"):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
        assert env_of(c)["REPRANK_METRICS_PORT"] == "9090"
    for svc in find(docs, "Service"):
        assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in svc["spec"]["ports"]
    assert one(gpu_docs, "ServiceMonitor", "reprank")["spec"]["endpoints"][0]["port"] == "http"


def test_external_qdrant_and_host_path_models():
    docs = render({"externalQdrant": {"url": "http://qdrant.vectors:6333"},
                   "models": {"volume": {"type": "hostPath", "hostPath": "/mnt/models"}},
                   "gateway": {"autoscaling": {"enabled": True}}})
    dep = one(docs, "Deployment", "reprank-gateway")
    env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["REPRANK_QDRANT_URL"] == "http://qdrant.vectors:6333" and "REPRANK_DATA_DIR" not in env
    assert "strategy" not in dep["spec"] and not find(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["hostPath"] == {"path": "/mnt/models", "type": "Directory"}
    assert find(docs, "HorizontalPodAutoscaler") and find(docs, "PodDisruptionBudget")


def test_every_command_and_setting_the_chart_passes_exists(default_docs, gpu_docs, monkeypatch):
    """The chart's args parse with reprank's own CLI and its REPRANK_* env names are Settings fields."""
    from cli import build_parser
    from service.settings import Settings

    docs = default_docs + gpu_docs + render(GPU_VALUES, {"indexer": {"enabled": True, "engine": "ray"},
                                                         "metrics": {"port": 9090}})
    containers = [c for spec in pod_specs(docs) for c in spec["containers"]]
    assert len(containers) == 8
    for c in containers:
        build_parser().parse_args(c["args"])  # SystemExit on an unknown flag or choice
        env = {e["name"]: e.get("value", "secret-from-a-Secret") for e in c["env"]}
        unknown = {n for n in env if n.startswith("REPRANK_")
                   and n.removeprefix("REPRANK_").lower() not in Settings.model_fields}
        unknown -= {"REPRANK_MODEL_CACHE"}  # read by models/loading.py, not a setting
        assert not unknown, (c["name"], unknown)
        for name in [n for n in os.environ if n.startswith("REPRANK_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        Settings()  # every value parses


# Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile):
    hadolint = Path(sys.executable).parent / "hadolint"
    out = subprocess.run([str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr

    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) == 2 and "AS" in text  # multi-stage: build tools stay out of the final image
    assert f"ARG UID={UID}" in text and re.search(r"^USER \$\{UID\}:\$\{UID\}$", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text and "curl" not in text
    for setting in ("HF_HUB_OFFLINE=1", "REPRANK_MODEL_CACHE=/models/cache", "REPRANK_HOST=0.0.0.0"):
        assert setting in text, setting
    assert all("--no-cache-dir" in line for line in re.findall(r"pip install[^\n]*", text))
    assert "torch==2.13.0" in text


def test_docker_context_holds_what_the_images_copy():
    ignore = (ROOT / ".dockerignore").read_text().split()
    for dockerfile in DOCKERFILES:
        for src in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), re.M):
            for path in src.split():
                assert f"!{path.rstrip('/')}" in [i.rstrip("/") for i in ignore], path
                assert (ROOT / path).exists(), path


def test_images_copy_every_package_that_installs():
    """A package added to pyproject (a new layer) but not to the Dockerfiles would install nowhere."""
    text = (ROOT / "pyproject.toml").read_text()
    packages = set(re.findall(r'"(\w+)\*"', re.search(r"\[tool.setuptools.packages.find\]\ninclude = \[(.*)\]", text)[1]))
    assert packages >= {"models", "store", "indexer", "search", "training", "service"}
    for dockerfile in DOCKERFILES:
        copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile.read_text(), re.M))
        assert copied == packages, dockerfile.name


# Metric names: dashboard and rules against the real /metrics


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects, by Prometheus's grammar (a Rust port of its parser)."""
    names: set[str] = set()
    ast = promql_parser.parse(expr)  # ValueError on anything Prometheus would refuse
    promql_parser.walk(ast, pre_visit=lambda n: names.add(n.name) if isinstance(n, promql_parser.VectorSelector)
                       else None)
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus receives it: Grafana's interval macro and variables filled in."""
    expr = expr.replace("$__rate_interval", "5m")
    label_values = re.fullmatch(r"label_values\((.+),\s*\w+\)", expr)  # a variable's query: its selector
    return label_values.group(1) if label_values else expr


def alert_rules(docs: list[dict]) -> list[dict]:
    rule = one(docs, "PrometheusRule", "reprank")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_exprs(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def exposed_names(text: str) -> set[str]:
    """Every series name /metrics shows, plus the names of declared families that have no series yet."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


@pytest.fixture(scope="module")
def metrics_text(tiny_llama, tmp_path_factory) -> str:
    """/metrics of the real app (role all, tiny random model, embedded store) after one request of each kind."""
    from starlette.testclient import TestClient

    from indexer.run import index_corpus
    from models import open_encoder
    from service.app import create_app
    from service.settings import Settings
    from store import Document
    from store.edge import EdgeStore

    data = tmp_path_factory.mktemp("deploy-data")
    store = EdgeStore(data)
    enc = open_encoder(str(tiny_llama), "smollm2")
    docs = [Document(f"d{i}", f"document {i} about parsing files", title=f"t{i}") for i in range(6)]
    index_corpus(docs, enc, store, "docs", progress=False)
    enc.close()
    store.close()
    settings = Settings(data_dir=data, collection="docs", model=str(tiny_llama), model_preset="smollm2",
                        reranker=str(tiny_llama), reranker_preset="smollm2-reranker")
    with TestClient(create_app(settings)) as client:
        deadline = time.time() + 120
        while client.get("/readyz").status_code != 200:
            assert time.time() < deadline, client.get("/readyz").text
            time.sleep(0.2)
        assert client.post("/v1/search", json={"query": "parsing", "top_k": 2}).status_code == 200
        assert client.post("/v1/embeddings", json={"input": ["a b c " * 400], "truncate": True}).status_code == 200
        assert client.post("/v1/rerank", json={"query": "q", "documents": ["x", "y"]}).status_code == 200
        assert client.post("/v1/search", json={"query": " "}).status_code == 400
        return client.get("/metrics").text


def test_dashboard_and_alert_metrics_exist_in_the_service(metrics_text, gpu_docs):
    exposed = exposed_names(metrics_text)
    dash = json.loads(one(gpu_docs, "ConfigMap", "reprank-dashboard")["data"]["reprank.json"])
    used = {"dashboard": set().union(*(metric_names(grafana_to_promql(e)) for e in dashboard_exprs(dash))),
            "alert rules": set().union(*(metric_names(r["expr"]) for r in alert_rules(gpu_docs)))}
    for where, names in used.items():
        assert names, where
        assert not names - exposed, f"the {where} name metrics that /metrics lacks: {sorted(names - exposed)}"
    # the labelled series behind the main panels exist after one request of each kind
    for series in ('reprank_request_seconds_bucket{le="0.005",route="/v1/search"}', 'stage="rerank"',
                   'reprank_queue_limit_tokens{model=', 'reprank_batch_padded_tokens_sum{model=',
                   'reprank_errors_total{route="/v1/search",status="400"}', "reprank_truncated_tokens_total{",
                   "reprank_dropped_total{model="):
        assert series in metrics_text, series


def test_workers_on_the_vllm_engine():
    """`engine: vllm` in a worker's values reaches it as REPRANK_ENGINE; unset, the worker keeps torch."""
    docs = render(GPU_VALUES, {"encoder": {"engine": "vllm"}})
    deps = {d["metadata"]["name"]: d for d in find(docs, "Deployment")}
    (enc,) = deps["reprank-encoder"]["spec"]["template"]["spec"]["containers"]
    (rr,) = deps["reprank-reranker"]["spec"]["template"]["spec"]["containers"]
    assert env_of(enc)["REPRANK_ENGINE"] == "vllm"
    assert "REPRANK_ENGINE" not in env_of(rr)
