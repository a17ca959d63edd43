"""Settings are read once, from arguments and one environment mapping, and passed down."""

import ast
from pathlib import Path

import pytest

import csctracker_ai_core
from csctracker_ai_core import ConfigurationError, IaProcessor
from csctracker_ai_core.paths import data_dir
from csctracker_ai_core.settings import DEFAULT_BASE_URL, ENVIRONMENT_VARIABLES, Settings

PACKAGE = Path(csctracker_ai_core.__file__).resolve().parent
# The one module that looks at the process environment (when a facade got no env=),
# and the command line, a facade that also decides what to print from it.
READS_OS_ENVIRON = {"settings.py", "cli.py"}

FREE = ["AIzaFREE-one-0000000000000000000000"]

# Every variable set to something that would fail or divert a processor that read it.
POISON = {
    "GOOGLE_FREE_KEYS": "AIzaPOISON-0000000000000000000000",
    "GOOGLE_PAID_KEYS": "AIzaPOISON-1111111111111111111111",
    "GOOGLE_MODEL_LIMITS": "not a limit",
    "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9/",
    "CSCTRACKER_AI_BASE_URL": "http://127.0.0.1:9/",
    "CSCTRACKER_AI_TIMEOUT_S": "soon",
    "CSCTRACKER_AI_MAX_WAIT_S": "later",
    "CSCTRACKER_AI_MAX_RETRIES": "many",
    "CSCTRACKER_AI_PRICES_FILE": "/nonexistent/prices.json",
    "CSCTRACKER_AI_REDIS_URL": "redis://127.0.0.1:9/0",
    "CSCTRACKER_AI_REDIS_POLICY": "panic",
    "CSCTRACKER_AI_REDIS_LEASE_TTL_S": "-1",
    "CSCTRACKER_AI_TELEMETRY": "everywhere",
    "CLICKHOUSE_PORT": "eighty",
    "CSCTRACKER_AI_BUDGETS": '[{"limit": "-1"}]',
}


def _os_environ_readers() -> list:
    """(module, line) of every use of os.environ / os.getenv / os.putenv in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            hit = (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv", "putenv", "environb")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and any(a.name in ("environ", "getenv", "environb") for a in node.names)
            )
            if hit:
                found.append((str(path.relative_to(PACKAGE)), node.lineno))
    return found


def test_no_module_below_the_facades_reads_the_process_environment():
    readers = _os_environ_readers()
    assert {module for module, _ in readers} <= READS_OS_ENVIRON, readers
    # the check sees what it claims to see
    assert any(module == "settings.py" for module, _ in readers)


def test_env_mapping_isolates_a_processor_from_os_environ(monkeypatch, make_gemini_emulator):
    for name, value in POISON.items():
        monkeypatch.setenv(name, value)
    emu = make_gemini_emulator()
    emu.add_keys(FREE, tier="free")
    with IaProcessor(google_free_keys=FREE, base_url=emu.base_url, telemetry="off", env={}) as p:
        resultado, tokens, _ = p.analisar_com_gemini(input_text="Qual a capital da França?", prompt="?")
    assert resultado == {"resposta": "Paris"} and tokens.total > 0
    # nothing read: every setting is its default
    loaded = Settings.load(env={}, google_free_keys=FREE, base_url=emu.base_url, telemetry="off")
    assert p.settings == loaded
    assert p.settings.redis is None and p.settings.prices_file is None
    assert p.settings.max_retries == 3 and p.settings.request_timeout_s == 120.0
    assert p.settings.data_dir == data_dir({})
    assert emu.total_requests == 1


def test_without_a_base_url_the_public_endpoint_is_passed_explicitly():
    """The SDK reads GOOGLE_GEMINI_BASE_URL from os.environ itself when given no base
    URL; an explicit default keeps env= in charge."""
    assert Settings.load(env={}).base_url == DEFAULT_BASE_URL
    assert Settings.load(env={"GOOGLE_GEMINI_BASE_URL": "http://sdk/"}).base_url == "http://sdk/"
    assert (
        Settings.load(env={"GOOGLE_GEMINI_BASE_URL": "http://sdk/", "CSCTRACKER_AI_BASE_URL": "http://ours/"}).base_url
        == "http://ours/"
    )
    assert (
        Settings.load(base_url="http://arg/", env={"CSCTRACKER_AI_BASE_URL": "http://ours/"}).base_url == "http://arg/"
    )


class RecordingEnv(dict):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def test_every_variable_read_is_listed_once():
    env = RecordingEnv(CSCTRACKER_AI_REDIS_URL="redis://localhost/0")
    Settings.load(env=env)
    assert env.read and env.read <= set(ENVIRONMENT_VARIABLES)
    # and every listed variable is actually read
    assert set(ENVIRONMENT_VARIABLES) <= env.read


def test_environment_values_are_read():
    s = Settings.load(
        env={
            "GOOGLE_MODEL_LIMITS": "gemini-2.5-pro=5",
            "CSCTRACKER_AI_TIMEOUT_S": "30",
            "CSCTRACKER_AI_MAX_RETRIES": "1",
            "CSCTRACKER_AI_MAX_WAIT_S": "0",
            "CSCTRACKER_AI_PRICES_FILE": "~/p.json",
            "CSCTRACKER_AI_DATA_DIR": "/tmp/csc",
            "CSCTRACKER_AI_REDIS_URL": "redis://:s3cret@r:6379/0",
            "CSCTRACKER_AI_REDIS_NAMESPACE": "ns",
            "CSCTRACKER_AI_REDIS_LEASE_TTL_S": "12",
            "CSCTRACKER_AI_REDIS_POLICY": "FAIL",
            "CLICKHOUSE_HOST": "ch",
            "CLICKHOUSE_PORT": "8123",
            "CLICKHOUSE_PASSWORD": "pw",
        }
    )
    assert dict(s.model_limits) == {"gemini-2.5-pro": 5}
    assert (s.request_timeout_s, s.max_retries, s.max_wait_s) == (30.0, 1, 0.0)
    assert s.prices_file == Path("~/p.json").expanduser()
    assert s.data_dir == Path("/tmp/csc") and s.telemetry.spool_path == Path("/tmp/csc/spool")
    assert (s.redis.namespace, s.redis.lease_ttl_s, s.redis.policy) == ("ns", 12.0, "fail")
    assert (s.telemetry.mode, s.telemetry.host, s.telemetry.port) == ("server", "ch", 8123)
    # arguments win over variables
    assert Settings.load(max_retries=0, env={"CSCTRACKER_AI_MAX_RETRIES": "5"}).max_retries == 0


def test_repr_hides_keys_and_secrets():
    s = Settings.load(
        google_free_keys=FREE,
        env={
            "CSCTRACKER_AI_REDIS_URL": "redis://:s3cret@r:6379/0",
            "CLICKHOUSE_HOST": "ch",
            "CLICKHOUSE_PASSWORD": "pw-s3cret",
        },
    )
    text = repr(s)
    assert "AIzaFREE" not in text and "s3cret" not in text and "Settings(" in text


@pytest.mark.parametrize(
    "name,value",
    [
        ("CSCTRACKER_AI_TIMEOUT_S", "soon"),
        ("CSCTRACKER_AI_REDIS_POLICY", "panic"),
        ("CSCTRACKER_AI_REDIS_LEASE_TTL_S", "-1"),
        ("GOOGLE_MODEL_LIMITS", "not a limit"),
        ("CLICKHOUSE_PORT", "eighty"),
    ],
)
def test_bad_variables_name_themselves(name, value):
    env = {name: value}
    if name.startswith("CSCTRACKER_AI_REDIS_") and name != "CSCTRACKER_AI_REDIS_URL":
        env["CSCTRACKER_AI_REDIS_URL"] = "redis://localhost/0"
    with pytest.raises(ConfigurationError, match=name):
        Settings.load(env=env)
