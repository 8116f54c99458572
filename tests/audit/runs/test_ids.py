from audit.runs.ids import new_run_id


def test_run_ids_sort_in_the_order_they_were_made():
    """Every 'latest run' query takes max(run_id): ids made within one second (or microsecond)
    must still sort in time order, not by their random suffix."""
    ids = [new_run_id() for _ in range(500)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
