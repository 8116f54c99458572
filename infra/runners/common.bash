# Sourced by dataflow.sh, flink.sh and spark.sh: the parts every runner script shares.
# start_command: checks IMAGE, INPUT and OUT and starts the array `cmd` with the `shardguard run`
# every runner executes; use_job_endpoint: the portable runner of an existing job server;
# run_command: prints it (DRY_RUN=1) or runs it.

start_command() {
  : "${IMAGE:?set IMAGE (worker image built from infra/docker/Dockerfile)}"
  : "${INPUT:?set INPUT (shard pattern)}"
  : "${OUT:?set OUT (shared output folder)}"
  cmd=(shardguard run --input "$INPUT" --out "$OUT" --config "${CONFIG:-infra/job.yaml}")
}

use_job_endpoint() {  # a job server you already run (JOB_ENDPOINT=host:port): PortableRunner; else fails
  [[ -n "${JOB_ENDPOINT:-}" ]] || return 1
  cmd+=(--runner PortableRunner --job_endpoint "$JOB_ENDPOINT")
}

run_command() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s\n' "${cmd[@]}"
  else
    exec "${cmd[@]}"
  fi
}
