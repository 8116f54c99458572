#!/usr/bin/env bash
# `shardguard run` on Apache Spark through Beam's portable runner, workers in the
# infra/docker/Dockerfile image (--environment_type=DOCKER).
#
# NOT run on the project's machines (no Spark cluster, and the job-server jar and Docker image
# cannot be fetched there): the flags parse with Beam's PipelineOptions
# (tests/infra/test_runner_configs.py), nothing more was verified.
#
# Two ways to reach Spark:
#   SPARK_MASTER=spark://host:7077  SparkRunner: Beam starts the Spark job server (needs Java; it
#                                   downloads the beam-runners-spark job-server jar once).
#   JOB_ENDPOINT=host:8099          PortableRunner: a Spark job server you run already
#                                   (docker run apache/beam_spark3_job_server --spark-master-url=...).
# Needs: IMAGE, INPUT, OUT (one folder every executor's Docker container sees at the same path).
# Optional: CONFIG. Extra arguments are appended. DRY_RUN=1 prints the command only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

start_command
if ! use_job_endpoint; then
  : "${SPARK_MASTER:?set SPARK_MASTER (spark://host:7077) or JOB_ENDPOINT}"
  cmd+=(--runner SparkRunner --spark_master_url "$SPARK_MASTER")
fi
cmd+=(--environment_type=DOCKER --environment_config "$IMAGE"
  "$@")

run_command
