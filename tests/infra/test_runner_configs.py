"""The runner configs in infra/ that cannot run here (Dataflow, Flink, Spark; no cloud, cluster,
job-server jar or Docker registry on the test machines): the scripts are valid bash, the command
each one builds is a `shardguard run` whose extra flags every one parse with Beam's
PipelineOptions (no flag discarded as unknown) to the intended values, and the worker Dockerfile
installs this project with the Beam SDK harness of the pinned Beam version. Nothing is built or
submitted."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import apache_beam.runners.portability.flink_runner  # noqa: F401  registers FlinkRunnerOptions
import apache_beam.runners.portability.spark_runner  # noqa: F401  registers SparkRunnerOptions
from pipelines.cli.dispatch import _parser

REPO = Path(__file__).resolve().parents[2]
RUNNERS = REPO / "infra" / "runners"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
IMAGE = "registry.example/shardguard-worker:0.1.0"
ENV = {"PROJECT": "proj", "REGION": "us-central1", "BUCKET": "bkt", "IMAGE": IMAGE,
       "INPUT": "gs://bkt/laion/{00000..00009}.tar", "OUT": "/mnt/audit", "DRY_RUN": "1"}


def dry_run(script: str, **env) -> list[str]:
    r = subprocess.run(["bash", str(RUNNERS / script), "--embed-batch-size", "512"], capture_output=True,
                       text=True, env={**os.environ, **ENV, **env}, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def parsed(argv: list[str], caplog) -> tuple[object, dict]:
    """(shardguard's own args, Beam's options) of a `shardguard run ...` command line."""
    assert argv[:2] == ["shardguard", "run"], argv
    args, beam_args = _parser().parse_known_args(argv[1:])
    assert (args.input, args.out, args.embed_batch_size) == (ENV["INPUT"], ENV["OUT"], 512)
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        opts = PipelineOptions(beam_args).get_all_options()
    assert not [r for r in caplog.records if "unparseable" in r.getMessage()], caplog.text
    return args, opts


@pytest.mark.parametrize("script", sorted(p.name for p in RUNNERS.glob("*.sh")))
def test_scripts_are_valid_bash(script):
    r = subprocess.run(["bash", "-n", str(RUNNERS / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dataflow_flags_parse(caplog):
    _, o = parsed(dry_run("dataflow.sh"), caplog)
    assert o["runner"] == "DataflowRunner" and o["sdk_container_image"] == IMAGE
    assert "use_runner_v2" in o["experiments"]
    assert o["dataflow_service_options"] == ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    assert o["machine_type"] == "g2-standard-8" and o["number_of_worker_harness_threads"] == 1
    assert (o["project"], o["region"], o["temp_location"]) == ("proj", "us-central1", "gs://bkt/shardguard/tmp")


@pytest.mark.parametrize("script,env,expect", [
    ("flink.sh", {"FLINK_MASTER": "flink-jm:8081"}, {"runner": "FlinkRunner", "flink_master": "flink-jm:8081"}),
    ("flink.sh", {"JOB_ENDPOINT": "localhost:8099"}, {"runner": "PortableRunner", "job_endpoint": "localhost:8099"}),
    ("spark.sh", {"SPARK_MASTER": "spark://sm:7077"}, {"runner": "SparkRunner", "spark_master_url": "spark://sm:7077"}),
    ("spark.sh", {"JOB_ENDPOINT": "localhost:8099"}, {"runner": "PortableRunner", "job_endpoint": "localhost:8099"}),
])
def test_portable_runner_flags_parse(script, env, expect, caplog):
    _, o = parsed(dry_run(script, **env), caplog)
    assert {k: o[k] for k in expect} == expect
    assert (o["environment_type"], o["environment_config"]) == ("DOCKER", IMAGE)


def test_scripts_refuse_to_run_without_their_settings():
    r = subprocess.run(["bash", str(RUNNERS / "dataflow.sh")], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k not in ENV}, timeout=30)
    assert r.returncode != 0 and "PROJECT" in r.stderr


def test_dockerfile_installs_the_project_on_cuda_with_the_pinned_beam_harness():
    text = DOCKERFILE.read_text()
    beam_pin = re.search(r'"apache-beam==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert re.search(r"^FROM nvidia/cuda:\S+cudnn\S*$", text, re.M)
    assert "python3.12" in text
    assert f"COPY --from=apache/beam_python3.12_sdk:{beam_pin} /opt/apache/beam /opt/apache/beam" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    assert re.search(r"pip install --index-url https://download.pytorch.org/whl/cu\d+ .*torch", text)
    assert re.search(r"RUN pip install \. ", text) and "onnxruntime-gpu" in text
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):  # everything it copies exists here
        for path in src.split():
            assert (REPO / path).exists(), path
