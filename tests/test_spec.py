"""Job specs: examples parse, and every kind of bad spec is refused with the field named."""
import subprocess
import sys

import pytest

from scheduler.spec import SpecError, load_spec, parse_spec
from tests.conftest import JOBS, small_spec


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.toml")), ids=lambda p: p.name)
def test_example_jobs_parse(path):
    """Every shipped example is a valid spec."""
    spec = load_spec(path)
    assert spec.rounds > 0 and spec.workload.shards > 0


def test_small_spec_fields():
    """Values land where they belong in the dataclass."""
    spec = parse_spec(small_spec(rounds=7, shards=3, target_accuracy=0.5))
    assert (spec.rounds, spec.shards, spec.target_accuracy) == (7, 3, 0.5)
    assert spec.workload.model == "softmax" and spec.optimizer == "sgd"


@pytest.mark.parametrize("text, field", [
    (small_spec().replace('workload = "softmax"', 'workload = "transformer"'), "model.workload"),
    (small_spec().replace("lr = 0.5", "lr = -0.1"), "optimizer.lr"),
    (small_spec().replace("rounds = 3\n", ""), "job.rounds"),
    (small_spec().replace('dataset = "digits"', 'dataset = "imagenet"'), "data.dataset"),
    (small_spec().replace("batch_size = 32", "batch_size = 0"), "data.batch_size"),
    (small_spec().replace("batch_size = 32", 'batch_size = "big"'), "data.batch_size"),
    (small_spec().replace("batch_size = 32", "batch_size = 32\nbatchsize = 3"), "data.batchsize"),
    (small_spec() + "\n[aggregation]\nrule = \"krum\"\nf = 5\n", "aggregation.krum"),
    (small_spec() + "\n[aggregation]\nrule = \"mystery\"\n", "aggregation.mystery"),
    (small_spec() + "\n[extras]\nx = 1\n", "extras"),
    (small_spec() + '\n[verification]\nsecond_opinion = "oracle"\n', "verification.second_opinion"),
    ("[job\nname=", "toml"),
])
def test_bad_specs_name_the_field(text, field):
    """A bad spec raises SpecError whose field names the culprit."""
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert info.value.field == field, str(info.value)


def test_submit_refuses_bad_spec_before_any_network(tmp_path):
    """`shardgrid submit` on a bad file exits 1 naming the field, with no coordinator running."""
    bad = tmp_path / "bad.toml"
    bad.write_text(small_spec().replace("lr = 0.5", "lr = -1.0"))
    proc = subprocess.run([sys.executable, "-m", "shardgrid", "submit", str(bad),
                           "--coordinator", "127.0.0.1:9"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "optimizer.lr" in proc.stderr
