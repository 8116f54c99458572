# ShardGuard: the two commands are `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_SAMPLE := infra/demo/sample
DEMO_OUT ?= demo-out
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-gpu bench bench-gpu venv demo-data demo-clean clean

venv: $(STAMP)

$(PY):
	@PY312="$$(infra/find_python312.sh)" || exit 1; echo "creating $(VENV) with $$PY312"; $$PY312 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@echo "installing shardguard and its stack into $(VENV) (first time: several minutes)"
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo-data: venv
	@if ! ls $(DEMO_SAMPLE)/*.tar >/dev/null 2>&1; then \
	  echo "building demo shards in $(DEMO_SAMPLE) (apt-get download + img2dataset)"; \
	  $(PY) infra/demo/build_demo_shards.py --out $(DEMO_SAMPLE) --count 1000 --shard-size 250; fi

demo: demo-data
	$(VENV)/bin/shardguard run --input $(DEMO_SAMPLE) --out $(DEMO_OUT)
	@echo; echo "== samples by status =="
	@$(VENV)/bin/shardguard sql --out $(DEMO_OUT) "SELECT status, count(*) AS n FROM samples GROUP BY ALL ORDER BY n DESC"
	@echo; echo "== exact byte-duplicate groups (top 5) =="
	@$(VENV)/bin/shardguard sql --out $(DEMO_OUT) "SELECT count(*) AS copies, any_value(caption) AS caption FROM samples WHERE status = 'ok' GROUP BY byte_hash HAVING count(*) > 1 ORDER BY copies DESC LIMIT 5"
	@echo; echo "== training-ready shards with the decisions applied =="
	$(VENV)/bin/shardguard clean --from $(DEMO_OUT) --to $(DEMO_OUT)-shards
	@echo; echo "tables and store: $(DEMO_OUT)/, clean shards: $(DEMO_OUT)-shards/  (rerun skips completed work; 'make demo-clean' starts over)"

demo-clean:
	rm -rf $(DEMO_OUT) $(DEMO_OUT)-shards

test: venv
	$(PY) -m pytest -m "not gpu" -q

test-gpu: venv
	$(PY) -m pytest -m gpu -q

bench: venv
	$(PY) -m pip install -q -e ".[test,bench]"
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/embed.py
	$(PY) benchmarks/sscd_copies.py
	$(PY) benchmarks/dedup_quality.py
	$(PY) benchmarks/dedup_scale.py
	$(PY) benchmarks/clean.py

bench-gpu: venv  # on a CUDA machine
	$(PY) benchmarks/embed.py --device cuda --shards 100
	$(PY) benchmarks/dedup_scale.py --device cuda

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(DEMO_OUT)-shards .pytest_cache
