"""The run template parser: Dapr's own examples, merging and paths, and every refusal's line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sidecar.runner import RunFileError, load_run_file, parse_run_file
from sidecar.runner.runfile import resolve_run_file_path


def write(root: Path, text: str, name: str = "dapr.yaml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def parse(root: Path, text: str):
    return load_run_file(write(root, text))


def refusal(root: Path, text: str) -> str:
    with pytest.raises(RunFileError) as info:
        parse(root, text)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def tree(tmp_path):
    """Two app directories beside the template, as in Dapr's examples."""
    for name in ("webapp", "backend", "processor", "emit-metrics"):
        (tmp_path / name).mkdir()
    return tmp_path


# --- Dapr's examples ---------------------------------------------------------------------------


def test_docs_overview_example(tmp_path):
    apps = tmp_path / "apps"
    (apps / "processor").mkdir(parents=True)
    (apps / "emit-metrics").mkdir()
    root = tmp_path / "run"
    root.mkdir()
    run = parse(
        root,
        """
        version: 1
        apps:
          - appID: processor
            appDirPath: ../apps/processor/
            appPort: 9081
            daprHTTPPort: 3510
            command: ["go","run", "app.go"]
          - appID: emit-metrics
            appDirPath: ../apps/emit-metrics/
            daprHTTPPort: 3511
            env:
              DAPR_HOST_ADD: localhost
            command: ["go","run", "app.go"]
        """,
    )
    assert run.version == 1
    processor, metrics = run.apps
    assert processor.app_id == "processor" and processor.app_dir == apps / "processor"
    assert processor.app_port == 9081 and processor.http_port == 3510
    assert processor.command == ("go", "run", "app.go")
    assert metrics.app_port is None  # outbound-only, as in Dapr
    assert metrics.env == {"DAPR_HOST_ADD": "localhost"}


def test_docs_template_with_every_common_field(tree):
    (tree / "app" / "components").mkdir(parents=True)
    (tree / ".dapr" / "webapp" / ".dapr" / "resources").mkdir(parents=True)
    (tree / ".dapr" / "webapp" / ".dapr" / "config.yaml").write_text("kind: Configuration\n")
    run = parse(
        tree,
        """
        version: 1
        common: # optional section for variables shared across apps
          resourcesPath: ./app/components # any dapr resources to be shared across apps
          env:  # any environment variable shared across apps
            DEBUG: true
        apps:
          - appID: webapp # optional
            appDirPath: .dapr/webapp/ # REQUIRED
            resourcesPath: .dapr/resources # deprecated
            resourcesPaths: .dapr/resources # comma separated resources paths
            appChannelAddress: 127.0.0.1
            configFilePath: .dapr/config.yaml
            appProtocol: http
            appPort: 8080
            appHealthCheckPath: "/healthz"
            command: ["python3", "app.py"]
            appLogDestination: file # (optional), can be file, console or fileAndConsole
            daprdLogDestination: file # (optional), can be file, console or fileAndConsole
          - appID: backend # optional
            appDirPath: backend/ # REQUIRED
        """,
    )
    webapp, backend = run.apps
    app_dir = tree / ".dapr" / "webapp"
    assert webapp.env == {"DEBUG": "true"}  # taken as written, like Go's yaml.v2 into a string
    assert webapp.config_file == app_dir / ".dapr" / "config.yaml"
    assert webapp.resources_paths == (app_dir / ".dapr" / "resources",) * 2
    assert webapp.health_check_path == "/healthz"
    assert webapp.app_log_destination == webapp.sidecar_log_destination == "file"
    assert backend.resources_paths == (tree / "app" / "components",)  # common's
    assert backend.env == {"DEBUG": "true"}


def test_dapr_cli_precedence_rule_testdata(tmp_path):
    """dapr/cli pkg/runfileconfig/testdata/test_run_config_precedence_rule.yaml, same layout."""
    for path in ("app/resources", "webapp/resources", "backend/.dapr/resources"):
        (tmp_path / path).mkdir(parents=True)
    (tmp_path / "app_precedence_rule").mkdir()
    for path in ("app/config.yaml", "webapp/config.yaml", "backend/.dapr/config.yaml"):
        (tmp_path / path).write_text("kind: Configuration\n")
    run = parse(
        tmp_path,
        """
        version: 1
        common:
          resourcesPath: ./app/resources
          configFilePath: ./app/config.yaml
        apps:
        # tests resourcesPath and config_file resolved from app's section.
          - appDirPath: ./webapp/
            resourcesPath: ./resources
            configFilePath: ./config.yaml
        # tests resourcesPath and config_file resolved from app/.dapr folder.
          - appID: backend
            appDirPath: ./backend/
        # tests resourcesPath and config_file resolved from common's section.
          - appID: app_common_section
            appDirPath: ./app_precedence_rule/
        """,
    )
    webapp, backend, common = run.apps
    assert webapp.app_id == "webapp"  # the basename of appDirPath
    assert webapp.config_file == tmp_path / "webapp" / "config.yaml"
    assert webapp.resources_paths == (tmp_path / "webapp" / "resources",)
    assert backend.config_file == tmp_path / "backend" / ".dapr" / "config.yaml"
    assert backend.resources_paths == (tmp_path / "backend" / ".dapr" / "resources",)
    assert common.config_file == tmp_path / "app" / "config.yaml"
    assert common.resources_paths == (tmp_path / "app" / "resources",)


# --- merging and paths -------------------------------------------------------------------------


def test_common_env_merges_and_the_app_wins(tree):
    run = parse(
        tree,
        """
        version: 1
        common:
          logLevel: debug
          env: {SHARED: common, OVERRIDE: common, EMPTY: }
        apps:
          - appDirPath: webapp
            logLevel: warn
            env: {OVERRIDE: mine, PORT: 8080}
          - appDirPath: backend
        """,
    )
    webapp, backend = run.apps
    assert webapp.env == {"SHARED": "common", "OVERRIDE": "mine", "EMPTY": "", "PORT": "8080"}
    assert backend.env == {"SHARED": "common", "OVERRIDE": "common", "EMPTY": ""}
    assert webapp.log_level == "warning" and backend.log_level == "debug"


def test_paths_common_relative_to_file_app_relative_to_app_dir(tree):
    (tree / "shared.yaml").write_text("kind: Configuration\n")
    (tree / "webapp" / "own.yaml").write_text("kind: Configuration\n")
    run = parse(
        tree,
        """
        version: 1
        common: {configFilePath: shared.yaml}
        apps:
          - {appDirPath: webapp, configFilePath: own.yaml}
          - {appDirPath: backend}
        """,
    )
    assert run.apps[0].config_file == tree / "webapp" / "own.yaml"
    assert run.apps[1].config_file == tree / "shared.yaml"


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "svc").mkdir()
    elsewhere = tmp_path / "templates"
    elsewhere.mkdir()
    run = parse(elsewhere, "version: 1\napps:\n  - appDirPath: ~/svc\n")
    assert run.apps[0].app_dir == tmp_path / "svc" and run.apps[0].app_id == "svc"


def test_a_directory_means_its_dapr_yaml(tree):
    write(tree, "version: 1\napps: [{appDirPath: webapp}]\n")
    assert resolve_run_file_path(tree) == tree / "dapr.yaml"
    assert load_run_file(tree).apps[0].app_id == "webapp"


def test_mcp_server_key(tree):
    run = parse(
        tree,
        """
        version: 1
        apps:
          - {appDirPath: webapp, mcpServer: true}
          - {appDirPath: backend, mcpServer: {path: /rpc/mcp}}
        """,
    )
    assert run.apps[0].mcp_server == {"path": "/mcp"}
    assert run.apps[1].mcp_server == {"path": "/rpc/mcp"}


def test_ports_and_defaults(tree):
    run = parse(
        tree,
        """
        version: 2
        name: demo
        apps:
          - {appDirPath: webapp, appPort: 0, daprHTTPPort: 0}
          - {appDirPath: backend, appPort: -1}
        """,
    )
    webapp, backend = run.apps
    assert run.name == "demo" and run.label == "demo"
    assert webapp.app_port == 0 and webapp.http_port is None  # 0: trustmesh picks
    assert backend.app_port is None  # negative: no app port, as in Dapr
    assert webapp.app_log_destination == "fileAndConsole"
    assert webapp.sidecar_log_destination == "console"


def test_dapr_keys_we_do_not_use_are_listed(tree):
    run = parse(
        tree,
        """
        version: 1
        common:
          maxBodySize: 4Mi
          enableProfiling: false
        apps:
          - appDirPath: webapp
            daprGRPCPort: 50001
            containerImage: ghcr.io/x/y:latest
        """,
    )
    path = tree / "dapr.yaml"
    assert run.ignored == (
        f"{path}:3: maxBodySize",
        f"{path}:4: enableProfiling",
        f"{path}:7: daprGRPCPort",
        f"{path}:8: containerImage",
    )


# --- refusals, each with its line --------------------------------------------------------------

REFUSALS = [
    ("apps: [{appDirPath: webapp}]\n", 1, "version is required"),
    ("version: 0\napps: [{appDirPath: webapp}]\n", 1, "version must not be 0"),
    ("version: one\napps: [{appDirPath: webapp}]\n", 1, "version must be an integer"),
    ("version: 1\n", 1, "apps is required"),
    ("version: 1\napps: []\n", 2, "apps must be a non-empty list"),
    ("version: 1\nservices: []\napps: [{appDirPath: webapp}]\n", 2, "unknown key 'services'"),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    appPrt: 8080\n",
        4,
        "apps[0]: unknown key 'appPrt'",
    ),
    ("version: 1\ncommon:\n  appPort: 1\napps: [{appDirPath: webapp}]\n", 3, "per-app key"),
    ("version: 1\napps:\n  - appID: x\n", 3, "appDirPath is required"),
    ("version: 1\napps:\n  - appDirPath: nowhere\n", 3, "does not exist"),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    appProtocol: grpc\n",
        4,
        "appProtocol 'grpc' is not supported",
    ),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    command: python3 app.py\n",
        4,
        "command must be a list",
    ),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n  - appDirPath: webapp\n",
        4,
        "appID 'webapp' is used twice (first at line 3)",
    ),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    appPort: 1\n    appPort: 2\n",
        5,
        "duplicate key 'appPort' (first at line 4)",
    ),
    (
        "version: 1\napps:\n  - {appDirPath: webapp, appPort: 8080}\n"
        "  - {appDirPath: backend, daprHTTPPort: 8080}\n",
        4,
        "daprHTTPPort 8080 is already the appPort",
    ),
    ("version: 1\napps:\n  - {appDirPath: webapp, appPort: 70000}\n", 3, "not a port"),
    ("version: 1\napps:\n  - {appDirPath: webapp, appPort: '80'}\n", 3, "must be an integer"),
    ("version: 1\napps:\n  - {appDirPath: webapp, mcpServer: yes please}\n", 3, "mcpServer"),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    mcpServer: {path: mcp}\n",
        4,
        "absolute URL path",
    ),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    configFilePath: missing.yaml\n",
        4,
        "configFilePath 'missing.yaml'",
    ),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    appChannelAddress: 10.0.0.5\n",
        4,
        "appChannelAddress must be 127.0.0.1",
    ),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    unixDomainSocket: /tmp\n",
        4,
        "unixDomainSocket is not supported",
    ),
    ("version: 1\napps:\n  - appDirPath: webapp\n    logLevel: loud\n", 4, "logLevel 'loud'"),
    (
        "version: 1\napps:\n  - appDirPath: webapp\n    appLogDestination: syslog\n",
        4,
        "appLogDestination must be one of",
    ),
    ("version: 1\napps:\n  - {appDirPath: webapp, appID: 'a.b'}\n", 3, "invalid app ID"),
    ("version: 1\napps:\n  - {appDirPath: webapp, env: [A]}\n", 3, "env must be a mapping"),
    ("version: 1\napps:\n  - {appDirPath: webapp, appSSL: true}\n", 3, "appSSL"),
    ("version: 1\napps: [{appDirPath: webapp\n", 3, "not valid YAML"),
]


@pytest.mark.parametrize(("text", "line", "words"), REFUSALS)
def test_refusals_name_file_and_line(tree, text, line, words):
    message = refusal(tree, text)
    assert message.startswith(f"{tree / 'dapr.yaml'}:{line}:"), message
    assert words in message


def test_app_id_from_a_directory_name_that_is_not_one(tmp_path):
    (tmp_path / "my.app").mkdir()
    message = refusal(tmp_path, "version: 1\napps:\n  - appDirPath: my.app\n")
    assert ":3:" in message and "set appID" in message


def test_missing_run_file_is_one_line(tmp_path):
    with pytest.raises(RunFileError, match="no such run file"):
        load_run_file(tmp_path / "absent.yaml")


def test_parse_is_pure_given_existing_paths(tree):
    run = parse_run_file("version: 1\napps: [{appDirPath: webapp}]\n", tree / "x.yaml")
    assert run.path == tree / "x.yaml" and run.apps[0].line == 2
