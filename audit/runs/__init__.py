"""One run of the job as a whole: run ids, per-shard and per-stage status, the failed-sample tally and
its threshold, the seconds per stage (stage_timings), and the run-to-run diff (run_changes).
"""
