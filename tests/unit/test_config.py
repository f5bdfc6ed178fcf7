"""Configuration precedence and validation (pure logic)."""

import pytest

from ciliumpy import config as cfg


def test_defaults_without_file_env_or_flags(tmp_path):
    config = cfg.load(str(_write(tmp_path, "")), {}, environ={})
    assert config.kvstore == "embedded"
    assert config.plugin_socket == "/run/docker/plugins/ciliumpy.sock"


def test_precedence_file_then_env_then_flags(tmp_path):
    path = _write(tmp_path, "threads: 4\nlog-level: debug\nnode-name: from-file\n")
    env = {"CILIUMPY_THREADS": "8", "CILIUMPY_NODE_NAME": "from-env"}
    config = cfg.load(str(path), {"node_name": "from-flag"}, environ=env)
    assert config.log_level == "debug"  # file only
    assert config.threads == 8  # env beats file
    assert config.node_name == "from-flag"  # flag beats env


def test_kvstore_opt_forms(tmp_path):
    path = _write(tmp_path, "kvstore: consul\nkvstore-opt:\n  consul.address: 127.0.0.1:8500\n")
    assert cfg.load(str(path), {}, environ={}).kvstore_opt == {"consul.address": "127.0.0.1:8500"}
    flags = {"kvstore_opt": ["consul.address=h:1", "consul.token=t"]}
    assert cfg.load(str(_write(tmp_path, "")), flags, environ={}).kvstore_opt == {
        "consul.address": "h:1", "consul.token": "t"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("threads: 0\n", "option 'threads' = 0: must be a positive integer"),
        ("kvstore: etcd\n", "must be one of embedded, consul"),
        ("colour: blue\n", "unknown option 'colour'"),
        ("default-pool-v4: 10.0.0.1/8\n", "default-pool-v4"),
        ("kvstore: consul\n", "needs --kvstore-opt consul.address"),
        ("datapath-mode: vxlan\n", "spans hosts and needs a shared kvstore"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("threads: [\n", "is not valid YAML"),
    ],
)
def test_bad_values_name_option_and_reason(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(str(path), {}, environ={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(cfg.ConfigError, match="No such file"):
        cfg.load(str(tmp_path / "absent.yaml"), {}, environ={})


def test_env_value_error_says_environment(tmp_path):
    with pytest.raises(cfg.ConfigError, match="^environment: option 'gc-grace'"):
        cfg.load(str(_write(tmp_path, "")), {}, environ={"CILIUMPY_GC_GRACE": "-1"})


def _write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path
