import pytest

from pipelines.config import load_config


def test_yaml_overrides_defaults(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("ingest:\n  require_caption: false\n  image:\n    min_side: 4\n    formats: [JPEG]\n")
    c = load_config(p)
    assert c.ingest.require_caption is False
    assert c.ingest.image.min_side == 4 and c.ingest.image.formats == ("JPEG",)


@pytest.mark.parametrize("text,msg", [
    ("ingest:\n  min_sidee: 3\n", "unknown key 'min_sidee'"),
    ("ingest:\n  require_caption: 'no'\n", "expected bool"),
    ("ingest:\n  image:\n    max_pixels: lots\n", "expected a number"),
])
def test_bad_config_fails_fast(tmp_path, text, msg):
    p = tmp_path / "job.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_config(p)


def test_shipped_job_yaml_is_valid():
    from tests.conftest import REPO
    assert load_config(REPO / "infra" / "job.yaml").ingest.image.min_side >= 1
