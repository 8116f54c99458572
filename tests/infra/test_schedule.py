"""infra/schedule/: cron, the Kubernetes CronJob and the Airflow DAG all run the same command,
and that command with nightly.yaml is a complete `shardguard run` (input, out, clean destination)."""

import ast
import shlex
from pathlib import Path

import yaml

from pipelines.cli.dispatch import _parser
from pipelines.config import load_config

SCHEDULE = Path(__file__).resolve().parents[2] / "infra" / "schedule"
COMMAND = ["shardguard", "run", "--config", "/etc/shardguard/nightly.yaml"]


def cron_jobs() -> list[tuple[str, list[str]]]:
    """(schedule, argv without redirections) of each job line of the crontab."""
    jobs = []
    for line in (SCHEDULE / "shardguard.cron").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" in line.split()[0]:
            continue  # comments and VAR=value lines
        fields = line.split(None, 5)
        argv = []
        for token in shlex.split(fields[5]):
            if token.startswith((">", "2>", "<", "|")) or token in ("&&", ";"):
                break
            argv.append(token)
        jobs.append((" ".join(fields[:5]), argv))
    return jobs


def cronjob_docs() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all((SCHEDULE / "cronjob.yaml").read_text())}


def dag_call(tree: ast.Module, name: str) -> ast.Call:
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]
    assert len(calls) == 1, name
    return calls[0]


def dag_value(tree: ast.Module, node: ast.expr):
    """A literal, or a module-level constant's literal."""
    if isinstance(node, ast.Name):
        [assign] = [n for n in tree.body if isinstance(n, ast.Assign) and any(
            getattr(t, "id", None) == node.id for t in n.targets)]
        node = assign.value
    return ast.literal_eval(node)


def test_cron_runs_the_command_nightly():
    [(schedule, argv)] = cron_jobs()
    assert argv == COMMAND
    assert schedule.split()[2:] == ["*", "*", "*"]  # every day


def test_kubernetes_cronjob_runs_the_command_with_the_config_map_and_a_volume_claim():
    docs = cronjob_docs()
    cron = docs["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] + container.get("args", []) == COMMAND
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    config_dir = str(Path(COMMAND[-1]).parent)
    assert "configMap" in mounts[config_dir]
    claim = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
    assert claim == {docs["PersistentVolumeClaim"]["metadata"]["name"]}
    # everything the job reads and writes lies on the claim's mount
    data_mounts = [p for p, v in mounts.items() if "persistentVolumeClaim" in v]
    cfg = load_config(SCHEDULE / "nightly.yaml")
    for path in (cfg.input, cfg.out, cfg.clean.to):
        assert any(Path(path).is_relative_to(m) for m in data_mounts), path
    assert cron["schedule"] == cron_jobs()[0][0]


def test_airflow_dag_runs_the_command_daily_one_at_a_time_without_catchup():
    tree = ast.parse((SCHEDULE / "shardguard_nightly_dag.py").read_text())
    dag = {k.arg: k.value for k in dag_call(tree, "DAG").keywords}
    assert dag_value(tree, dag["max_active_runs"]) == 1 and dag_value(tree, dag["catchup"]) is False
    schedule = dag_value(tree, dag["schedule"])
    assert schedule in ("@daily", cron_jobs()[0][0])
    op = {k.arg: k.value for k in dag_call(tree, "BashOperator").keywords}
    assert shlex.split(dag_value(tree, op["bash_command"])) == COMMAND


def test_nightly_config_is_a_complete_incremental_run():
    cfg = load_config(SCHEDULE / "nightly.yaml")
    assert cfg.input and cfg.out and cfg.clean.to and cfg.dedup.incremental
    assert cfg.embed.enabled and cfg.embed.sscd != "none"  # the accepted-corpus index needs SSCD vectors
    assert cfg.clean.sanitize != "auto"  # a destination keeps one treatment
    args, rest = _parser().parse_known_args(COMMAND[1:])
    assert (args.command, args.config, args.input, args.out, rest) == ("run", COMMAND[-1], None, None, [])
