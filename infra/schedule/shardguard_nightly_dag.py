"""Airflow DAG: the ShardGuard nightly run, one BashOperator running the scheduled command.

Copy this file into the Airflow dags/ folder on a worker where `shardguard` is installed and
/etc/shardguard/nightly.yaml (infra/schedule/nightly.yaml) exists. One run at a time
(max_active_runs=1) and no backfill (catchup=False): a run already does every shard that is
new since the last one, so missed nights need no replay. Exit status 3 (the output folder is
locked by another run) fails the task; the next night picks up everything.
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

COMMAND = "shardguard run --config /etc/shardguard/nightly.yaml"

with DAG(
    dag_id="shardguard_nightly",
    description="Audit new shards, dedup against the accepted corpus, append clean shards, record run_changes",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=30)},
    tags=["shardguard"],
) as dag:
    BashOperator(task_id="shardguard_run", bash_command=COMMAND)
