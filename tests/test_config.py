"""agent.toml and the Config dataclasses agree; bad files give one clear error; env overrides; the
`face-agent config check|show` commands."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import typing

import pytest
from conftest import ROOT

from agent.cli import main
from agent.config import (
    ENV_OVERRIDES,
    SECRET_KEYS,
    Config,
    ConfigError,
    config_as_dict,
    config_from_dict,
    load_config,
    tomllib,
)

AGENT_TOML = ROOT / "agent.toml"
SECTIONS = [f for f in dataclasses.fields(Config) if f.name not in ("base_dir", "sources")]


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def toml_lines() -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) -> (the line, the line before it) for every key line of agent.toml."""
    out, section, previous = {}, None, ""
    for line in AGENT_TOML.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if m := re.fullmatch(r"\[([A-Za-z_]+)\]\s*(#.*)?", stripped):
            section = m.group(1)
        elif m := re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*=", stripped):
            out[(section, m.group(1))] = (line, previous)
        if stripped:
            previous = stripped
    return out


# ------------------------------------------------------------------ agent.toml <-> dataclasses


def test_agent_toml_has_every_section_and_key_with_the_dataclass_default():
    data = tomllib.loads(AGENT_TOML.read_text(encoding="utf-8"))
    assert sorted(data) == sorted(f.name for f in SECTIONS)
    hints = typing.get_type_hints(Config)
    for section in SECTIONS:
        cls = hints[section.name]
        fields = {f.name: default_of(f) for f in dataclasses.fields(cls)}
        in_file = data[section.name]
        assert sorted(in_file) == sorted(fields), f"[{section.name}] keys differ from {cls.__name__}"
        for key, default in fields.items():
            assert in_file[key] == default, f"{section.name}.{key}: agent.toml {in_file[key]!r} != {default!r}"
            assert type(in_file[key]) is type(default), f"{section.name}.{key}: int/float mismatch"


def test_every_key_in_agent_toml_is_documented():
    lines = toml_lines()
    for section in SECTIONS:
        for f in dataclasses.fields(typing.get_type_hints(Config)[section.name]):
            line, previous = lines[(section.name, f.name)]
            assert " #" in line or previous.startswith("#"), f"{section.name}.{f.name} has no comment: {line!r}"


def test_loading_agent_toml_equals_the_builtin_defaults():
    cfg = load_config(AGENT_TOML)
    assert config_as_dict(cfg) == config_as_dict(config_from_dict({}, env={}))
    assert cfg.base_dir == ROOT
    assert cfg.path("storage") == ROOT / "storage"


# ------------------------------------------------------------------ clear errors


@pytest.mark.parametrize("text, expected", [
    ("[detector]\nmin_face_sise = 20\n", r"\[detector\]: unknown key\(s\) min_face_sise; known: .*min_face_size"),
    ("[detektor]\n", r"unknown section\(s\) detektor"),
    ('[detector]\nmin_face_size = "20"\n', r"detector.min_face_size: expected an integer, got str '20'"),
    ("[detector]\nmin_face_size = 20.5\n", r"detector.min_face_size: expected an integer, got float"),
    ("[mqtt]\nenabled = 1\n", r"mqtt.enabled: expected true or false, got int 1"),
    ("[mqtt]\nport = true\n", r"mqtt.port: expected an integer, got bool"),
    ('[detector]\nthresholds = [0.6, "high", 0.7]\n', r"detector.thresholds\[1\]: expected a number"),
    ('[detector]\nbackend = "cuda"\n', r"detector.backend: 'cuda' is not one of auto, onnxruntime, tensorrt"),
    ('[mqtt]\nprotocol = "v4"\n', r"mqtt.protocol: 'v4' is not one of v311, v5"),
    ("[mqtt]\nport = 70000\n", r"mqtt.port: 70000 is out of range: must be between 1 and 65535"),
    ('[agent]\nid = "a/b"\n', r"agent.id: 'a/b' must be non-empty"),
    ("[detector\nbackend = 1\n", r"not valid TOML"),
    ("detector = 3\n", r"\[detector\] must be a table"),
])
def test_bad_files_give_one_clear_error(tmp_path, text, expected):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert re.search(expected, message), message


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


# ------------------------------------------------------------------ environment overrides


def test_env_overrides_secrets_and_host():
    assert set(ENV_OVERRIDES) >= {"FACE_AGENT_MQTT_PASSWORD", "FACE_AGENT_MQTT_USERNAME"}
    data = {"mqtt": {"password": "from-file", "username": "file-user", "host": "file-host"}}
    env = {"FACE_AGENT_MQTT_PASSWORD": "s3cret", "FACE_AGENT_MQTT_USERNAME": "agent-9",
           "FACE_AGENT_MQTT_HOST": "broker.lan"}
    cfg = config_from_dict(data, env=env)
    assert (cfg.mqtt.password, cfg.mqtt.username, cfg.mqtt.host) == ("s3cret", "agent-9", "broker.lan")
    assert config_from_dict(data, env={}).mqtt.password == "from-file"
    assert config_from_dict(data, env={"FACE_AGENT_MQTT_PASSWORD": ""}).mqtt.password == "from-file"
    assert data["mqtt"]["password"] == "from-file"  # the parsed document is not modified


def test_env_overrides_apply_to_load_config(tmp_path, monkeypatch):
    path = tmp_path / "agent.toml"
    path.write_text('[mqtt]\nusername = "agent-1"\n')
    monkeypatch.setenv("FACE_AGENT_MQTT_PASSWORD", "from-env")
    cfg = load_config(path)
    assert cfg.mqtt.password == "from-env" and cfg.mqtt.username == "agent-1"
    assert config_as_dict(cfg)["mqtt"]["password"] == "********"
    assert config_as_dict(cfg, mask_secrets=False)["mqtt"]["password"] == "from-env"


# ------------------------------------------------------------------ face-agent config check / show


def write(tmp_path, text: str):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return str(path)


def test_config_check_ok(tmp_path, capsys):
    conf = write(tmp_path, '[paths]\nstorage = "data/storage"\n')
    assert main(["--config", conf, "config", "check"]) == 0
    assert capsys.readouterr().out.strip() == f"configuration OK: {conf}"


@pytest.mark.parametrize("text, expected", [
    ('[tracker]\nmin_hits = "two"\n', "tracker.min_hits: expected an integer"),
    ('[paths]\nstorage = "blocker/storage"\n', "paths.storage: "),
    ('[paths]\nsvm = "blocker"\n', "paths.svm: "),
    ('[mqtt]\ntls = true\nca_file = "missing-ca.pem"\n', "mqtt.ca_file: "),
    ('[remote_enroll]\nkey_file = "keys.txt"\n', "remote_enroll.key_file: "),
    ('[mqtt]\ncert_file = "blocker"\n', "mqtt: cert_file and key_file go together"),
])
def test_config_check_problems_exit_2_with_one_line(tmp_path, capsys, text, expected):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    conf = write(tmp_path, text)
    assert main(["--config", conf, "config", "check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("face-agent: configuration error: ")
    assert expected in err[0], err[0]


def test_config_check_sees_existing_tls_files(tmp_path):
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    conf = write(tmp_path, '[mqtt]\ntls = true\nca_file = "ca.pem"\ncert_file = "cert.pem"\nkey_file = "key.pem"\n')
    assert main(["--config", conf, "config", "check"]) == 0


def test_config_show_round_trips_and_masks_secrets(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FACE_AGENT_MQTT_PASSWORD", raising=False)
    monkeypatch.delenv("FACE_AGENT_WEB_PASSWORD_HASH", raising=False)
    conf = write(tmp_path, '[mqtt]\npassword = "hunter2-in-file"\nusername = "agent-3"\n'
                           '[web]\npassword_hash = "scrypt$hash-in-file"\n'
                           '[agent]\ncamera_name = "caméra \\"east\\" \\\\ door"\n')
    assert main(["--config", conf, "config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and 'password = "********"' in out
    shown = tomllib.loads(out)
    cfg = load_config(conf)
    assert shown == config_as_dict(cfg)
    assert shown["agent"]["camera_name"] == 'caméra "east" \\ door'
    assert f"# paths.storage -> {tmp_path / 'storage'}" in out

    assert main(["--config", conf, "config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == config_as_dict(cfg) and shown["mqtt"]["password"] == "********"
    for section, key in SECRET_KEYS:
        assert shown[section][key] == "********"


def test_config_without_action_prints_usage(capsys):
    assert main(["config"]) == 2
    assert "check" in capsys.readouterr().err


def test_config_commands_in_a_subprocess_with_env_secrets(tmp_path):
    conf = write(tmp_path, '[mqtt]\nhost = "file-host"\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT), FACE_AGENT_MQTT_PASSWORD="env-secret-123",
               FACE_AGENT_MQTT_USERNAME="agent-env", FACE_AGENT_MQTT_HOST="env-host")

    def agent(*args):
        return subprocess.run([sys.executable, "-m", "agent", "--config", conf, *args], env=env,
                              capture_output=True, text=True, timeout=60)

    show = agent("config", "show", "--json")
    assert show.returncode == 0, show.stderr
    mqtt = json.loads(show.stdout)["mqtt"]
    assert mqtt == dict(mqtt, username="agent-env", host="env-host", password="********")
    assert "env-secret-123" not in show.stdout + show.stderr
    check = agent("config", "check")
    assert check.returncode == 0 and "configuration OK" in check.stdout
    bad = subprocess.run([sys.executable, "-m", "agent", "--config", str(tmp_path / "none.toml"), "config",
                          "check"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"face-agent: configuration error: {tmp_path / 'none.toml'}: "
                                               "no such config file"]


# ------------------------------------------------------------------ ranges: one schema, config check and start


@pytest.mark.parametrize("text, key", [
    ("[mqtt]\nmax_inflight = 0\n", "mqtt.max_inflight"),
    ("[mqtt]\nack_timeout = 0\n", "mqtt.ack_timeout"),
    ("[mqtt]\nstats_interval = -5\n", "mqtt.stats_interval"),
    ("[detector]\nthreads = -3\n", "detector.threads"),
    ("[embedding]\nthreads = 0\n", "embedding.threads"),
    ("[tracker]\ndetect_every = 0\n", "tracker.detect_every"),
    ("[images]\nmax_pixels = 0\n", "images.max_pixels"),
    ("[images]\nmax_pixels = 200000000\n", "images.max_pixels"),  # above Pillow's own guard
    ("[store]\nretention_days = -1\n", "store.retention_days"),
    ("[store]\nmax_db_mb = 0\n", "store.max_db_mb"),
    ("[service]\nbroker_grace = inf\n", "service.broker_grace"),
    ("[service]\nstatus_interval = nan\n", "service.status_interval"),
    ('[mqtt]\ntopic_prefix = "faces/#"\n', "mqtt.topic_prefix"),
    ('[mqtt]\ntopic_prefix = "site+1"\n', "mqtt.topic_prefix"),
    ('[mqtt]\ntopic_prefix = ""\n', "mqtt.topic_prefix"),
    ('[mqtt]\ndiscovery_prefix = "#"\n', "mqtt.discovery_prefix"),
    ("[mqtt]\nreconnect_min_delay = 10.0\nreconnect_max_delay = 1.0\n", "mqtt.reconnect_max_delay"),
    ("[voting]\nwindow = 2\nmin_votes = 5\n", "voting.min_votes"),
    ("[remote_enroll]\nworker_nice = 40\n", "remote_enroll.worker_nice"),
    ("[detector]\nmax_input_side = 5\n", "detector.max_input_side"),  # P-Net takes 12 px at the least
    ("[detector]\nthresholds = [0.6, 0.7]\n", "detector.thresholds"),
    ("[detector]\nthresholds = [0.6, 0.7, 1.5]\n", "detector.thresholds"),
    ("[detector]\nnms_thresholds = [0.5, 0.7, 0]\n", "detector.nms_thresholds"),
    ("[detector]\nmin_face_size = 0\n", "detector.min_face_size"),
    ("[detector]\nscale_factor = 1.0\n", "detector.scale_factor"),
    ("[detector]\npyramid_workers = 0\n", "detector.pyramid_workers"),
    ("[voting]\nhysteresis = 0.5\n", "voting.hysteresis"),
    ("[recognition]\ndistance_threshold = 0.6\n", "the old raw-L2 scale of 0.6 no longer applies"),
    ('[mqtt]\nkey_file = "key.pem"\n', "mqtt.key_file: set without mqtt.cert_file"),
    ("", "sets nothing"),
    ("# only a comment\n", "sets nothing"),
])
def test_nonsense_values_are_refused_by_config_check_and_at_start(tmp_path, capsys, text, key):
    conf = write(tmp_path, text)
    assert main(["--config", conf, "config", "check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("face-agent: configuration error: "), err
    assert key in err[0], err[0]
    # the same schema refuses it when the agent starts (before any model or broker is touched)
    assert main(["--config", conf, "run", "--source", str(tmp_path), "--max-frames", "1"]) == 2
    assert key in capsys.readouterr().err


def test_every_range_names_a_numeric_field_and_holds_its_default():
    from agent.config import bounds

    defaults = config_from_dict({}, env={})
    ranges = bounds()
    assert len(ranges) > 70 and ("tracker", "split_distance") in ranges and ("mqtt", "port") in ranges
    assert ("recognition", "distance_threshold") in ranges
    for (section, key), allowed in ranges.items():
        value = getattr(getattr(defaults, section), key)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (section, key)
        assert allowed.holds(value), f"{section}.{key}: default {value} outside {allowed}"
