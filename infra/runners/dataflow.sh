#!/usr/bin/env bash
# `shardguard run` on Google Cloud Dataflow (Runner v2, GPU workers from infra/docker/Dockerfile).
#
# NOT run on the project's machines (no cloud access): the flags parse with Beam's
# PipelineOptions (tests/infra/test_runner_configs.py), nothing more was verified.
#
# Needs: PROJECT, REGION, BUCKET (gs:// staging, no prefix), IMAGE (the pushed worker image),
# INPUT (e.g. gs://bucket/laion/{00000..00999}.tar), OUT. OUT must be one POSIX folder that the
# launcher and every worker see at the same path (a Filestore NFS mount or a GCS FUSE mount), since
# workers write the per-shard Parquet files and markers there; the launcher writes the runs row and
# audit.duckdb. Optional: CONFIG (default infra/job.yaml), MACHINE_TYPE, MAX_WORKERS, GPU.
# Extra arguments are appended (more Beam or shardguard flags). DRY_RUN=1 prints the command, one
# argument per line, and runs nothing.
#   PROJECT=p REGION=us-central1 BUCKET=b IMAGE=us-docker.pkg.dev/p/r/shardguard-worker:0.1.0 \
#   INPUT='gs://b/laion/*.tar' OUT=/mnt/audit infra/runners/dataflow.sh --embed-batch-size 512
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

: "${PROJECT:?set PROJECT (GCP project id)}"
: "${REGION:?set REGION (e.g. us-central1)}"
: "${BUCKET:?set BUCKET (staging bucket name)}"
start_command
cmd+=(
  --runner DataflowRunner
  --project "$PROJECT" --region "$REGION"
  --temp_location "gs://$BUCKET/shardguard/tmp" --staging_location "gs://$BUCKET/shardguard/staging"
  --sdk_container_image "$IMAGE" --sdk_location container
  --experiments=use_runner_v2
  --dataflow_service_options="worker_accelerator=type:${GPU:-nvidia-l4};count:1;install-nvidia-driver"
  --machine_type "${MACHINE_TYPE:-g2-standard-8}"
  --number_of_worker_harness_threads 1   # one shard at a time per worker: the GPU is the bottleneck
  --max_num_workers "${MAX_WORKERS:-8}"
  --disk_size_gb 100
  "$@")

run_command
