#!/usr/bin/env bash
# `shardguard run` on Apache Flink through Beam's portable runner, workers in the
# infra/docker/Dockerfile image (--environment_type=DOCKER).
#
# NOT run on the project's machines (no Flink cluster, and the job-server jar and Docker image
# cannot be fetched there): the flags parse with Beam's PipelineOptions
# (tests/infra/test_runner_configs.py), nothing more was verified.
#
# Two ways to reach Flink:
#   FLINK_MASTER=host:8081   FlinkRunner: Beam starts the Flink job server (needs Java; it
#                            downloads the beam-runners-flink job-server jar once) and submits.
#   JOB_ENDPOINT=host:8099   PortableRunner: a Flink job server you run already
#                            (docker run apache/beam_flink1.19_job_server --flink-master=...).
# Needs: IMAGE, INPUT, OUT (one folder every Flink TaskManager's Docker container sees at the same
# path: mount it into the SDK containers, e.g. a shared NFS path on each host). Optional: CONFIG,
# PARALLELISM, FLINK_VERSION. Extra arguments are appended. DRY_RUN=1 prints the command only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

start_command
if ! use_job_endpoint; then
  : "${FLINK_MASTER:?set FLINK_MASTER (host:port of the Flink REST endpoint) or JOB_ENDPOINT}"
  cmd+=(--runner FlinkRunner --flink_master "$FLINK_MASTER" --flink_version "${FLINK_VERSION:-1.19}")
fi
cmd+=(--environment_type=DOCKER --environment_config "$IMAGE"
  --parallelism "${PARALLELISM:-4}"
  "$@")

run_command
