"""The deployment files: container image, compose, Kubernetes, systemd.

No docker or cluster here, so the files are read as data and checked for the properties that break
a deployment silently: the chunk directory at the same path on both sides, the event socket not
published, the probes on the real endpoints, a stop timeout longer than the drain, a config that
validates against the real model.
"""

from __future__ import annotations

import configparser
import glob
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from fsbridge.config import Config, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONFIG_PATH = "/etc/fsbridge/fsbridge.yaml"
GREETING_PATH = "/usr/share/fsbridge/greeting"
ESL_PORT = 8021
HTTP_PORT = 8080
# fsbridge's shutdown drain; every stop timeout must be longer so calls are not cut by SIGKILL.
DRAIN_S = 90


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently, so a
    second ``ports:`` would hide the first from every other check here)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _load_all(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]


def _load(path: Path) -> Any:
    docs = _load_all(path)
    assert len(docs) == 1, path
    return docs[0]


def _interpolate(value: str) -> str:
    """Compose-style ${VAR:-default} / ${VAR:?err} / ${VAR} with an empty environment."""

    def sub(m: re.Match[str]) -> str:
        op, arg = m.group(2), m.group(3) or ""
        if op == ":-":
            return arg
        if op == ":?":
            return "set"
        return ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", sub, value)


# ---------------------------------------------------------------------------------------------
# Every YAML file


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_loads(path: Path) -> None:
    assert _load_all(path), f"{path} is empty"


def test_example_config_validates_without_secrets() -> None:
    cfg = load_config(DEPLOY / "fsbridge.yaml", env={})
    assert cfg.realtime.api_key is None  # the key comes from the environment, never the file
    assert (cfg.listen.host, cfg.listen.port) == ("0.0.0.0", HTTP_PORT)
    assert cfg.listen.public_url == f"ws://fsbridge:{HTTP_PORT}"
    assert (cfg.freeswitch.host, cfg.freeswitch.port) == ("freeswitch", ESL_PORT)
    assert cfg.freeswitch.chunk_dir == "/var/lib/fsbridge/chunks"
    default, english = cfg.profile("default"), cfg.profile("english")
    assert default.voice == "marin" and default.greeting == f"{GREETING_PATH}/greeting.wav"
    assert default.transcription is not None and default.transcription.language == "tr"
    assert english.transcription is not None and english.transcription.language == "en"
    for prof in (default, english):
        for path in (prof.greeting, prof.apology):
            assert path is not None
            assert (ROOT / "greeting" / PurePosixPath(path).name).is_file(), path


def test_example_config_secrets_come_from_env() -> None:
    cfg = load_config(
        DEPLOY / "fsbridge.yaml", env={"OPENAI_API_KEY": "sk-x", "FSBRIDGE_ESL_PASSWORD": "pw"}
    )
    assert cfg.realtime.api_key is not None and cfg.realtime.api_key.get_secret_value() == "sk-x"
    assert cfg.freeswitch.password.get_secret_value() == "pw"


def test_env_example_names_both_secrets() -> None:
    text = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    for var in ("OPENAI_API_KEY", "FSBRIDGE_ESL_PASSWORD"):
        assert re.search(rf"(?m)^{var}=$", text), f"{var}= (empty) in .env.example"


# ---------------------------------------------------------------------------------------------
# docker compose


def _compose() -> dict[str, Any]:
    return _load(DEPLOY / "docker-compose.yml")


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) for short and long volume syntax."""
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            out.append((vol["source"], _interpolate(vol["target"]), bool(vol.get("read_only"))))
            continue
        parts = _interpolate(vol).split(":")
        out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def _published_container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for spec in service.get("ports", []):
        if isinstance(spec, dict):
            target = str(spec["target"])
        else:
            target = _interpolate(str(spec)).split("/")[0].split(":")[-1]
        lo, _, hi = target.partition("-")
        ports.update(range(int(lo), int(hi or lo) + 1))
    return ports


def _mounted_config(service: dict[str, Any]) -> Path:
    for src, dst, _ro in _mounts(service):
        if dst == CONFIG_PATH:
            return (DEPLOY / src).resolve()
    raise AssertionError("fsbridge service does not mount its config")


def test_compose_services_and_config() -> None:
    services = _compose()["services"]
    assert {"fsbridge", "freeswitch"} <= set(services)
    fsb = services["fsbridge"]
    assert fsb["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / fsb["build"]["context"] / fsb["build"]["dockerfile"]).is_file()
    assert "${FREESWITCH_IMAGE:-" in (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    cfg_path = _mounted_config(fsb)
    assert cfg_path.is_file()
    load_config(cfg_path, env={})


def test_compose_chunk_volume_same_path_in_both() -> None:
    compose = _compose()
    services = compose["services"]
    chunk_dir = load_config(_mounted_config(services["fsbridge"]), env={}).freeswitch.chunk_dir
    by_service = {}
    for name in ("fsbridge", "freeswitch"):
        hits = [(src, ro) for src, dst, ro in _mounts(services[name]) if dst == chunk_dir]
        assert len(hits) == 1, f"{name} must mount the chunk volume at {chunk_dir}"
        by_service[name] = hits[0]
    assert by_service["fsbridge"][0] == by_service["freeswitch"][0]
    assert by_service["fsbridge"][0] in compose.get("volumes", {}), "a named volume"
    assert not by_service["fsbridge"][1], "fsbridge writes the chunks"


def test_compose_greetings_same_path_read_only_in_both() -> None:
    services = _compose()["services"]
    seen = []
    for name in ("fsbridge", "freeswitch"):
        hits = [(src, ro) for src, dst, ro in _mounts(services[name]) if dst == GREETING_PATH]
        assert hits and hits[0][1], f"{name}: greetings read-only at {GREETING_PATH}"
        seen.append(hits[0][0])
    assert seen[0] == seen[1]
    assert (DEPLOY / seen[0] / "greeting.wav").is_file()


def test_compose_bind_mount_sources_exist() -> None:
    compose = _compose()
    for name, svc in compose["services"].items():
        for src, _dst, _ro in _mounts(svc):
            if src in compose.get("volumes", {}):
                continue
            assert (DEPLOY / src).exists(), f"{name}: {src}"


def test_compose_does_not_publish_the_event_socket() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        assert ESL_PORT not in _published_container_ports(svc), name
    # ... while SIP and RTP are published on FreeSWITCH.
    fs_ports = _published_container_ports(services["freeswitch"])
    assert 5060 in fs_ports and len(fs_ports) > 50
    # fsbridge's admin port only on the host's loopback.
    for spec in services["fsbridge"].get("ports", []):
        assert str(spec).startswith("127.0.0.1:"), spec


def test_compose_secrets_from_env_file_and_stop_grace() -> None:
    services = _compose()["services"]
    fsb = services["fsbridge"]
    env_file = fsb["env_file"]
    assert (env_file if isinstance(env_file, str) else env_file[0]) == ".env"
    assert "OPENAI_API_KEY" not in json.dumps(services["freeswitch"])
    grace = fsb["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > DRAIN_S


# ---------------------------------------------------------------------------------------------
# Dockerfile


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    logical, buf = [], ""
    for line in text.splitlines():
        if not buf and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            logical.append(buf.strip())
        buf = ""
    out = []
    for item in logical:
        instr, _, args = item.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr, args in _dockerfile():
        if instr == "FROM":
            stages.append([])
        assert stages, "instruction before FROM"
        stages[-1].append((instr, args))
    return stages


def test_dockerfile_is_multistage_with_slim_final() -> None:
    stages = _stages()
    assert len(stages) >= 2
    base = stages[-1][0][1].split()[0]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    names = {s[0][1].split()[-1] for s in stages[:-1] if " AS " in s[0][1].upper()}
    final_text = " ".join(a for _, a in stages[-1])
    for ref in re.findall(r"from=(\S+?)[,\s]", final_text + " "):
        assert ref in names, f"unknown stage {ref}"


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    final = " ".join(f"{i} {a}" for i, a in _stages()[-1]).lower()
    for tool in ("gcc", "build-essential", "g++", "make ", "apt-get install", "curl"):
        assert tool not in final, tool


def test_dockerfile_runs_as_non_root() -> None:
    users = [a for i, a in _stages()[-1] if i == "USER"]
    assert users, "final stage needs USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "numeric uid so Kubernetes runAsNonRoot can verify it"


def test_dockerfile_healthcheck_cmd_expose_volume() -> None:
    final = _stages()[-1]
    health = [a for i, a in final if i == "HEALTHCHECK"]
    assert len(health) == 1
    assert f"http://127.0.0.1:{HTTP_PORT}/healthz" in health[0] and "urllib" in health[0]
    cmd = [a for i, a in final if i == "CMD"][-1]
    assert json.loads(cmd) == ["fsbridge", "serve", "--config", CONFIG_PATH]
    assert [a for i, a in final if i == "EXPOSE"] == [str(HTTP_PORT)]
    volumes = [json.loads(a) for i, a in final if i == "VOLUME"]
    assert ["/var/lib/fsbridge/chunks"] in volumes


def test_dockerfile_copy_sources_exist() -> None:
    copies = 0
    for stage in _stages():
        for instr, args in stage:
            if instr not in ("COPY", "ADD"):
                continue
            words = shlex.split(args)
            if any(w.startswith("--from=") for w in words):
                continue
            srcs = [w for w in words if not w.startswith("--")][:-1]
            assert srcs, args
            for src in srcs:
                copies += 1
                assert glob.glob(str(ROOT / src)), f"COPY source {src} missing from the repo"
    assert copies >= 3


# ---------------------------------------------------------------------------------------------
# Kubernetes


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in _load_all(path) if d.get("kind") != "Kustomization")
    return docs


def _kind(kind: str) -> dict[str, Any]:
    found = [d for d in _k8s_docs() if d["kind"] == kind]
    assert len(found) == 1, f"one {kind}"
    return found[0]


def _containers() -> dict[str, dict[str, Any]]:
    spec = _kind("Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def _configmap_config() -> dict[str, Any]:
    return yaml.load(_kind("ConfigMap")["data"]["fsbridge.yaml"], Loader=_StrictLoader)


def _port(container: dict[str, Any], ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    for p in container.get("ports", []):
        if p.get("name") == ref:
            return int(p["containerPort"])
    raise AssertionError(f"no port named {ref}")


def test_kustomization_lists_every_manifest() -> None:
    kust = _load(K8S / "kustomization.yaml")
    resources = set(kust["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert resources == on_disk
    kinds = {d["kind"] for d in _k8s_docs()}
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= kinds


def test_configmap_config_validates_for_the_pod() -> None:
    cfg = parse_config(_configmap_config(), env={})
    # Same pod: the fork and the event socket stay on loopback.
    assert cfg.listen.public_url == f"ws://127.0.0.1:{HTTP_PORT}"
    assert (cfg.freeswitch.host, cfg.freeswitch.port) == ("127.0.0.1", ESL_PORT)
    assert cfg.listen.port == HTTP_PORT
    assert set(cfg.profiles) >= {"default", "english"}


def test_configmap_dialplan_is_the_shipped_one() -> None:
    shipped = (ROOT / "freeswitch" / "dialplan" / "fsbridge.xml").read_text(encoding="utf-8")
    assert _kind("ConfigMap")["data"]["fsbridge.xml"] == shipped


def test_deployment_probes_port_and_grace() -> None:
    pod = _kind("Deployment")["spec"]["template"]["spec"]
    fsb = _containers()["fsbridge"]
    assert _port(fsb, "http") == HTTP_PORT
    live, ready = fsb["livenessProbe"]["httpGet"], fsb["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz" and _port(fsb, live["port"]) == HTTP_PORT
    assert ready["path"] == "/readyz" and _port(fsb, ready["port"]) == HTTP_PORT
    assert pod["terminationGracePeriodSeconds"] >= 100
    assert pod["terminationGracePeriodSeconds"] > DRAIN_S
    assert fsb["args"] == ["fsbridge", "serve", "--config", CONFIG_PATH]
    for c in pod["containers"]:
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]


def test_deployment_fsbridge_container_is_locked_down() -> None:
    pod = _kind("Deployment")["spec"]["template"]["spec"]
    for c in [*pod.get("initContainers", []), _containers()["fsbridge"]]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert "ALL" in sc["capabilities"]["drop"], c["name"]
        # Everything it writes is a mounted emptyDir.
        volumes = {v["name"]: v for v in pod["volumes"]}
        writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
        for m in writable:
            assert "emptyDir" in volumes[m["name"]], f"{c['name']}: {m['mountPath']}"
    paths = {m["mountPath"] for m in _containers()["fsbridge"]["volumeMounts"]}
    assert "/tmp" in paths


def _mount_at(container: dict[str, Any], path: str) -> dict[str, Any]:
    hits = [m for m in container["volumeMounts"] if m["mountPath"] == path]
    assert len(hits) == 1, f"{container['name']} must mount {path}"
    return hits[0]


def test_deployment_shares_chunks_at_the_configured_path() -> None:
    chunk_dir = parse_config(_configmap_config(), env={}).freeswitch.chunk_dir
    containers = _containers()
    assert set(containers) == {"fsbridge", "freeswitch"}
    names = {_mount_at(c, chunk_dir)["name"] for c in containers.values()}
    assert len(names) == 1, "both containers mount the SAME volume"
    volumes = {v["name"]: v for v in _kind("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[names.pop()]
    assert not _mount_at(containers["fsbridge"], chunk_dir).get("readOnly")


def test_deployment_shares_greetings_at_the_configured_path() -> None:
    cfg = parse_config(_configmap_config(), env={})
    dirs = {
        str(PurePosixPath(p).parent)
        for prof in cfg.profiles.values()
        for p in (prof.greeting, prof.apology)
        if p
    }
    assert dirs == {GREETING_PATH}
    containers = _containers()
    names = {_mount_at(c, GREETING_PATH)["name"] for c in containers.values()}
    assert len(names) == 1
    # The init container fills that volume from the image.
    init = _kind("Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert any(m["name"] in names for c in init for m in c["volumeMounts"])


def test_deployment_config_and_secret_wiring() -> None:
    cm, secret = _kind("ConfigMap"), _kind("Secret")
    assert set(secret["stringData"]) == {
        "OPENAI_API_KEY",
        "FSBRIDGE_ESL_PASSWORD",
        "FSBRIDGE_ADMIN_TOKEN",
    }
    pod = _kind("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    fsb, fs = _containers()["fsbridge"], _containers()["freeswitch"]
    cfg_mount = next(m for m in fsb["volumeMounts"] if CONFIG_PATH.startswith(m["mountPath"] + "/"))
    assert volumes[cfg_mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert CONFIG_PATH.rsplit("/", 1)[1] in cm["data"]
    assert fsb["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    refs = [e["valueFrom"]["secretKeyRef"] for e in fs["env"] if "valueFrom" in e]
    assert {(r["name"], r["key"]) for r in refs} == {
        (secret["metadata"]["name"], "FSBRIDGE_ESL_PASSWORD")
    }
    dialplan = next(m for m in fs["volumeMounts"] if m.get("subPath") == "fsbridge.xml")
    assert dialplan["mountPath"].endswith("/dialplan/fsbridge.xml")


def test_event_socket_is_not_exposed_in_kubernetes() -> None:
    svc = _kind("Service")
    ports = [p["port"] for p in svc["spec"]["ports"]]
    assert HTTP_PORT in ports and ESL_PORT not in ports
    http = next(p for p in svc["spec"]["ports"] if p["port"] == HTTP_PORT)
    assert _port(_containers()["fsbridge"], http["targetPort"]) == HTTP_PORT
    for c in _containers().values():
        assert ESL_PORT not in [p["containerPort"] for p in c.get("ports", [])]
    for rule in _kind("NetworkPolicy")["spec"]["ingress"]:
        for p in rule["ports"]:
            assert not (p["port"] <= ESL_PORT <= p.get("endPort", p["port"])), p


# ---------------------------------------------------------------------------------------------
# systemd


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / "fsbridge.service", encoding="utf-8")
    return parser


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", value.strip())
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def test_systemd_unit_keys() -> None:
    unit = _unit()
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    svc = unit["Service"]
    assert svc["User"] == "fsbridge"
    assert svc["EnvironmentFile"] == "/etc/fsbridge/env"
    argv = shlex.split(svc["ExecStart"])
    assert argv[0].startswith("/") and argv[0].endswith("/fsbridge")
    assert argv[1:] == ["serve", "--config", CONFIG_PATH]
    assert svc["Restart"] == "on-failure"
    assert svc["KillSignal"] == "SIGTERM"
    assert _seconds(svc["TimeoutStopSec"]) > DRAIN_S
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_unit_hardening_keeps_chunks_writable() -> None:
    svc = _unit()["Service"]
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    chunk_dir = Config().freeswitch.chunk_dir
    assert chunk_dir in svc["ReadWritePaths"].split()
    # A private /tmp is only safe because the chunks are not there: FreeSWITCH could not see them.
    assert svc.get("PrivateTmp") == "yes" and not chunk_dir.startswith("/tmp")
    assert svc["UMask"] == "0027"


# ---------------------------------------------------------------------------------------------
# operations: the drain, the admin API, call traces (fsbridge/service.py, admin.py, trace.py)


def _deployed_configs() -> dict[str, Config]:
    return {
        "compose": load_config(_mounted_config(_compose()["services"]["fsbridge"]), env={}),
        "k8s": parse_config(_configmap_config(), env={}),
    }


def test_deployed_configs_drain_and_admin_agree_with_the_files() -> None:
    assert Config().service.drain_timeout_s == DRAIN_S
    for name, cfg in _deployed_configs().items():
        assert cfg.service.drain_timeout_s <= DRAIN_S, name
        assert cfg.listen.port == HTTP_PORT, name  # where the probes and Prometheus look
        # Actions on calls never on the published port: a separate listener on loopback.
        assert cfg.admin.port not in (0, HTTP_PORT) and cfg.admin.host == "127.0.0.1", name
        assert cfg.admin.token is None, f"{name}: the token belongs in the environment"


def test_admin_token_is_a_secret_of_the_bridge_only() -> None:
    assert re.search(r"(?m)^FSBRIDGE_ADMIN_TOKEN=$", (DEPLOY / ".env.example").read_text())
    assert "FSBRIDGE_ADMIN_TOKEN" in _kind("Secret")["stringData"]
    assert "FSBRIDGE_ADMIN_TOKEN" not in json.dumps(_compose()["services"]["freeswitch"])
    assert "FSBRIDGE_ADMIN_TOKEN" not in json.dumps(_containers()["freeswitch"])


def test_traces_dir_is_writable_wherever_fsbridge_runs() -> None:
    traces = Config().traces.dir
    for name, cfg in _deployed_configs().items():
        assert cfg.traces.dir == traces, name
    hits = [ro for _src, dst, ro in _mounts(_compose()["services"]["fsbridge"]) if dst == traces]
    assert hits == [False], "compose: a writable volume at traces.dir (the root fs is read-only)"
    mount = _mount_at(_containers()["fsbridge"], traces)
    volumes = {v["name"]: v for v in _kind("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert not mount.get("readOnly") and "emptyDir" in volumes[mount["name"]]
    assert traces in _unit()["Service"]["ReadWritePaths"].split()
    final = _stages()[-1]
    assert [traces] in [json.loads(a) for i, a in final if i == "VOLUME"]
