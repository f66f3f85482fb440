"""Tests for trainers/data/: MNIST-1D generator fidelity, corruptions, splits, sources, npz."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from activescale.errors import ConfigError, DataError
from trainers.data import (
    BatchSource,
    DataConfig,
    FixedSource,
    StreamSource,
    corrupt,
    easy_prototypes,
    generate_mnist1d,
    inject_duplicates,
    inject_label_noise,
    inject_noise_inputs,
    load_splits,
    make_source,
)
from trainers.data import mnist1d as data


def within_binomial(count: int, n: int, rate: float, sigmas: float = 4.0) -> bool:
    """`count` successes in `n` Bernoulli(rate) trials lie within `sigmas` standard deviations."""
    return abs(count - n * rate) <= sigmas * math.sqrt(n * rate * (1 - rate))


# ---------------------------------------------------------------------------------------------
# MNIST-1D generator
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def make_dataset_sample() -> tuple[np.ndarray, np.ndarray]:
    """2000 examples from the reference implementation (its train and test parts together)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 2000
    saved = np.random.get_state()  # make_dataset reseeds the global numpy generator
    try:
        ref = make_dataset(args)
    finally:
        np.random.set_state(saved)
    x = np.concatenate([ref["x"], ref["x_test"]]).astype(np.float32)
    y = np.concatenate([ref["y"], ref["y_test"]]).astype(np.int64)
    return x, y


def test_constants_match_mnist1d_defaults() -> None:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    assert args.template_len == data._TEMPLATE_LEN
    assert tuple(args.padding) == data._PADDING
    assert args.scale_coeff == data._SCALE_COEFF
    assert args.max_translation == data._MAX_TRANSLATION
    assert args.corr_noise_scale == data._CORR_NOISE_SCALE
    assert args.iid_noise_scale == data._IID_NOISE_SCALE
    assert args.shear_scale == data._SHEAR_SCALE
    assert args.final_seq_length == data.MNIST1D_LENGTH


def test_render_equals_reference_transform_given_the_same_draws() -> None:
    """Replay transform()'s own global-numpy draws through the batched renderer."""
    from mnist1d.data import get_dataset_args, get_templates
    from mnist1d.transform import transform

    args, templates = get_dataset_args(), get_templates()
    n = 300
    labels = np.arange(n) % 10
    draws: dict[str, list] = {k: [] for k in ("pad", "scale", "shift", "corr", "iid", "shear")}
    reference = []
    saved = np.random.get_state()
    try:
        for i in range(n):
            # Same call sequence as transform(): pad, scale, translate, corr, iid, shear.
            np.random.seed(i)
            draws["pad"].append(36 + int(np.random.rand() * 25))
            draws["scale"].append(1 + 0.4 * (np.random.rand() - 0.5))
            draws["shift"].append(np.random.choice(48))
            draws["corr"].append(np.random.randn(72))
            draws["iid"].append(np.random.randn(72))
            draws["shear"].append(0.75 * (np.random.rand() - 0.5))
            np.random.seed(i)
            reference.append(transform(templates["x"][labels[i]], templates["t"], args)[0])
    finally:
        np.random.set_state(saved)
    ours = data._render_mnist1d(
        labels,
        np.asarray(draws["pad"]),
        np.asarray(draws["scale"]),
        np.asarray(draws["shift"]),
        np.stack(draws["corr"]).astype(np.float32),
        np.stack(draws["iid"]).astype(np.float32),
        np.asarray(draws["shear"]),
    )
    # float32 rendering vs float64 reference; raw signals have std ~0.15, observed error ~1e-7.
    np.testing.assert_allclose(ours, np.stack(reference), rtol=0, atol=1e-6)


def test_standardisation_constants_reproduce() -> None:
    mean, std = data._measure_raw_moments(n=2**16, seed=123)
    # Sampling error of the mean/std over 2.6M correlated values is well below these bounds.
    assert abs(mean - data._RAW_MEAN) < 0.01 * data._RAW_STD
    assert abs(std / data._RAW_STD - 1) < 0.01


def test_generator_statistics_match_make_dataset(
    make_dataset_sample: tuple[np.ndarray, np.ndarray],
) -> None:
    ref_x, ref_y = make_dataset_sample
    x, y = generate_mnist1d(20000, np.random.default_rng(0), label_balance="balanced")
    assert x.shape == (20000, 40) and x.dtype == np.float32 and y.dtype == np.int64
    # make_dataset standardises its own sample to mean 0, std 1 exactly.
    assert abs(float(x.mean())) < 0.02
    assert abs(float(x.std()) - 1) < 0.02
    # Per-class mean signal: every (class, position) difference within 5 standard errors
    # (400 comparisons; |z| > 5 has probability ~6e-7 each under equal distributions).
    for label in range(10):
        a, b = x[y == label], ref_x[ref_y == label]
        se = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
        z = (a.mean(0) - b.mean(0)) / se
        assert np.abs(z).max() < 5, (label, np.abs(z).max())


def test_classifier_trained_on_generator_transfers_to_make_dataset(
    make_dataset_sample: tuple[np.ndarray, np.ndarray],
) -> None:
    ref_x, ref_y = make_dataset_sample
    x, y = generate_mnist1d(12000, np.random.default_rng(1))
    # One thread: a model this small gains nothing from two, and on a busy CPU OpenMP threads
    # waiting for each other made this test take 20 s instead of 1 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        own, ref = _train_and_evaluate(x, y, ref_x, ref_y)
    finally:
        torch.set_num_threads(threads)
    assert ref > 0.5, ref  # well above chance (0.1): the check below means something
    # Standard error of the difference is ~1.1 points (4000 vs 2000 test examples at ~70%).
    assert abs(own - ref) < 0.05, (own, ref)


def _train_and_evaluate(
    x: np.ndarray, y: np.ndarray, ref_x: np.ndarray, ref_y: np.ndarray
) -> tuple[float, float]:
    """MLP trained on 8000 generated examples; accuracy on 4000 more and on ref_x."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(40, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_x, train_y = torch.from_numpy(x[:8000]), torch.from_numpy(y[:8000])
    for _ in range(300):
        batch = torch.randint(0, 8000, (512,))
        loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        own = (model(torch.from_numpy(x[8000:])).argmax(1).numpy() == y[8000:]).mean()
        ref = (model(torch.from_numpy(ref_x)).argmax(1).numpy() == ref_y).mean()
    return float(own), float(ref)


def test_generator_is_deterministic_per_seed() -> None:
    a = generate_mnist1d(500, np.random.default_rng(7))
    b = generate_mnist1d(500, np.random.default_rng(7))
    c = generate_mnist1d(500, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_balanced_labels_have_equal_counts() -> None:
    _, y = generate_mnist1d(1005, np.random.default_rng(0), label_balance="balanced")
    counts = np.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1005


# ---------------------------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------------------------

N = 20000  # binomial tolerance below: 4 standard deviations of the count


def test_label_noise_hits_rate_and_never_keeps_the_label() -> None:
    y = np.random.default_rng(0).integers(0, 10, N)
    noisy, mask = inject_label_noise(y, 0.3, np.random.default_rng(1), 10)
    assert within_binomial(int(mask.sum()), N, 0.3)
    assert np.all(noisy[mask] != y[mask])
    np.testing.assert_array_equal(noisy[~mask], y[~mask])
    # The new class is uniform over the 9 others.
    offsets = np.bincount((noisy[mask] - y[mask]) % 10, minlength=10)[1:]
    assert all(within_binomial(int(c), int(mask.sum()), 1 / 9) for c in offsets)
    assert noisy is not y and np.array_equal(y, np.random.default_rng(0).integers(0, 10, N))


def test_noise_inputs_hit_rate_and_replace_inputs() -> None:
    x, y = generate_mnist1d(N, np.random.default_rng(0))
    x_new, y_new, mask = inject_noise_inputs(x, y, 0.2, np.random.default_rng(1), 10)
    assert within_binomial(int(mask.sum()), N, 0.2)
    np.testing.assert_array_equal(x_new[~mask], x[~mask])
    np.testing.assert_array_equal(y_new[~mask], y[~mask])
    assert np.all(np.abs(x_new[mask] - x[mask]).max(axis=1) > 0)
    assert np.all((y_new[mask] >= 0) & (y_new[mask] < 10))
    # Noise matches the data's per-feature scale.
    np.testing.assert_allclose(x_new[mask].std(0), x.std(0), rtol=0.1)


def test_duplicates_hit_rate_and_copy_prototypes() -> None:
    x, y = generate_mnist1d(N, np.random.default_rng(0))
    proto_x, proto_y = easy_prototypes(x, y)
    assert proto_x.shape == (10, 40) and list(proto_y) == list(range(10))
    x_new, y_new, mask = inject_duplicates(x, y, 0.25, np.random.default_rng(1))
    assert within_binomial(int(mask.sum()), N, 0.25)
    matches = (x_new[mask][:, None, :] == proto_x[None]).all(-1)  # (replaced, prototype)
    assert np.all(matches.sum(1) == 1)
    np.testing.assert_array_equal(y_new[mask], proto_y[matches.argmax(1)])
    np.testing.assert_array_equal(x_new[~mask], x[~mask])


def test_duplicates_respect_where() -> None:
    x, y = generate_mnist1d(1000, np.random.default_rng(0))
    where = np.arange(1000) < 500
    _, _, mask = inject_duplicates(x, y, 0.5, np.random.default_rng(1), where=where)
    assert mask[500:].sum() == 0 and mask[:500].sum() > 0


def test_corrupt_replacements_are_disjoint_with_overall_rates() -> None:
    x = np.arange(N, dtype=np.float32)[:, None].repeat(3, axis=1)  # every row unique
    y = np.arange(N) % 10
    prototypes = (np.full((2, 3), -1.0, dtype=np.float32), np.array([0, 1]))
    cfg = DataConfig(label_noise=0.2, noise_inputs=0.1, duplicate_easy=0.15)
    x_new, y_new, corrupted = corrupt(x, y, cfg, np.random.default_rng(0), 10, prototypes)
    duplicated = (x_new == -1.0).all(1)
    noise = ~duplicated & (x_new != x).any(1)
    untouched_inputs = ~duplicated & ~noise
    flipped = untouched_inputs & (y_new != y)
    assert within_binomial(int(duplicated.sum()), N, 0.15)
    assert within_binomial(int(noise.sum()), N, 0.1)
    assert within_binomial(int(flipped.sum()), int(untouched_inputs.sum()), 0.2)
    np.testing.assert_array_equal(corrupted, duplicated | noise | flipped)


# ---------------------------------------------------------------------------------------------
# Config validation (one test per rule)
# ---------------------------------------------------------------------------------------------


def test_every_config_field_has_a_description() -> None:
    assert all(f.description for f in DataConfig.model_fields.values())


@pytest.mark.parametrize("field", ["train_size", "test_size", "clean_size"])
def test_config_sizes_must_be_positive(field: str) -> None:
    with pytest.raises(
        ValidationError, match=rf"{field}=0 is not allowed: must be an integer >= 1"
    ):
        DataConfig.model_validate({field: 0})


@pytest.mark.parametrize("field", ["label_noise", "noise_inputs", "duplicate_easy"])
@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_config_rates_must_be_fractions(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=rf"{field}=.* is not allowed: .*\[0, 1\)"):
        DataConfig.model_validate({field: value})


@pytest.mark.parametrize("field", ["label_noise", "noise_inputs", "duplicate_easy"])
def test_config_rates_must_be_finite(field: str) -> None:
    with pytest.raises(ValidationError, match="finite number"):
        DataConfig.model_validate({field: float("nan")})


def test_config_replacement_rates_must_sum_below_one() -> None:
    with pytest.raises(ValidationError, match=r"noise_inputs \+ duplicate_easy = 0.5 \+ 0.5"):
        DataConfig(noise_inputs=0.5, duplicate_easy=0.5)


@pytest.mark.parametrize("name", ["npz", "cifar10", "imagefolder"])
def test_config_file_datasets_need_a_path(name: str) -> None:
    with pytest.raises(ValidationError, match=rf"path=None is not allowed with name='{name}'"):
        DataConfig.model_validate({"name": name})


def test_config_stream_needs_mnist1d() -> None:
    with pytest.raises(ValidationError, match="regime='stream' is not allowed with name='npz'"):
        DataConfig(name="npz", path="x.npz", regime="stream")


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_config_seed_must_fit_one_word(seed: int) -> None:
    with pytest.raises(ValidationError, match=rf"seed={seed} is not allowed"):
        DataConfig(seed=seed)


def test_config_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="train_sise"):
        DataConfig(train_sise=10)  # type: ignore[call-arg]


# ---------------------------------------------------------------------------------------------
# MNIST-1D splits
# ---------------------------------------------------------------------------------------------


def test_mnist1d_splits_are_deterministic_and_shaped() -> None:
    cfg = DataConfig(train_size=300, test_size=200, clean_size=100, seed=3)
    a, b = load_splits(cfg), load_splits(cfg)
    for field in ("train_x", "train_y", "train_corrupted", "test_x", "test_y", "clean_x"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.train_x.shape == (300, 40) and a.train_x.dtype == torch.float32
    assert a.test_y.dtype == torch.int64 and a.train_corrupted.dtype == torch.bool
    assert a.clean_x.shape == (100, 40) and a.num_classes == 10 and a.input_shape == (40,)
    assert torch.bincount(a.test_y, minlength=10).tolist() == [20] * 10
    other = load_splits(cfg.model_copy(update={"seed": 4}))
    assert not torch.equal(a.train_x, other.train_x)


def test_mnist1d_pools_are_nested_across_train_size() -> None:
    small = load_splits(DataConfig(train_size=1000))
    large = load_splits(DataConfig(train_size=5000))
    assert torch.equal(small.train_x, large.train_x[:1000])
    assert torch.equal(small.test_x, large.test_x)


def test_test_and_clean_splits_are_clean() -> None:
    clean_cfg = DataConfig(train_size=5000)
    noisy_cfg = clean_cfg.model_copy(
        update={"label_noise": 0.3, "noise_inputs": 0.2, "duplicate_easy": 0.2}
    )
    clean, noisy = load_splits(clean_cfg), load_splits(noisy_cfg)
    assert torch.equal(clean.test_x, noisy.test_x) and torch.equal(clean.test_y, noisy.test_y)
    assert torch.equal(clean.clean_x, noisy.clean_x) and torch.equal(clean.clean_y, noisy.clean_y)
    assert not clean.train_corrupted.any()
    # Corruption touches exactly the flagged training examples of the same underlying pool.
    ok = ~noisy.train_corrupted
    assert torch.equal(noisy.train_x[ok], clean.train_x[ok])
    assert torch.equal(noisy.train_y[ok], clean.train_y[ok])
    expected = 1 - (1 - 0.3) * (1 - 0.2 - 0.2)
    assert within_binomial(int(noisy.train_corrupted.sum()), 5000, expected)


def test_stream_splits_have_no_training_pool() -> None:
    splits = load_splits(DataConfig(regime="stream", test_size=50, clean_size=20))
    assert splits.train_x.shape == (0, 40) and len(splits.train_y) == 0
    assert splits.test_x.shape == (50, 40) and splits.clean_x.shape == (20, 40)


# ---------------------------------------------------------------------------------------------
# Batch sources
# ---------------------------------------------------------------------------------------------


def tiny_pool(size: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.arange(size, dtype=torch.float32)[:, None]
    return x, torch.arange(size), torch.arange(size) % 2 == 0


def roundtrip(state: dict) -> dict:
    """What a checkpoint does: torch.save, then torch.load with weights_only=True."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_fixed_source_crosses_epochs() -> None:
    source = FixedSource(*tiny_pool(10), seed=0)
    ids = torch.cat([source.next(n)[1] for n in (7, 7, 7, 4)]).tolist()  # 25 draws
    assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:20]) == list(range(10))
    assert ids[:10] != ids[10:20]  # each epoch is reshuffled
    one_call = FixedSource(*tiny_pool(10), seed=0)
    x, y, corrupted = one_call.next(25)  # 2.5 epochs at once
    assert y.tolist() == ids
    assert torch.equal(corrupted, y % 2 == 0) and torch.equal(x[:, 0].long(), y)
    assert one_call.examples_seen == 25 and one_call.epoch == 2


def test_fixed_source_resumes_exactly() -> None:
    a = FixedSource(*tiny_pool(10), seed=5)
    a.next(13)
    b = FixedSource(*tiny_pool(10), seed=5)
    b.load_state_dict(roundtrip(a.state_dict()))
    for n in (3, 10, 1, 17):
        assert all(torch.equal(u, v) for u, v in zip(a.next(n), b.next(n), strict=True))
    assert a.examples_seen == b.examples_seen == 44


def test_fixed_source_rejects_state_of_another_run() -> None:
    state = FixedSource(*tiny_pool(10), seed=5).state_dict()
    with pytest.raises(ConfigError, match="cannot resume a fixed source"):
        FixedSource(*tiny_pool(10), seed=6).load_state_dict(state)


def test_stream_never_repeats_and_avoids_eval_splits() -> None:
    cfg = DataConfig(regime="stream", test_size=500, clean_size=500)
    source = StreamSource(cfg, seed=0, chunk_size=1000)
    xs = torch.cat([source.next(512)[0] for _ in range(20)])  # 10240 examples, 11 chunks
    splits = load_splits(cfg)
    everything = torch.cat([xs, splits.test_x, splits.clean_x])
    assert len(torch.unique(everything, dim=0)) == len(everything)
    other = StreamSource(cfg, seed=1, chunk_size=1000).next(512)[0]
    assert not torch.equal(other, xs[:512])


def test_stream_resumes_exactly() -> None:
    cfg = DataConfig(regime="stream", label_noise=0.1, duplicate_easy=0.1)
    a = StreamSource(cfg, seed=2, chunk_size=1000)
    a.next(1700)
    b = StreamSource(cfg, seed=2, chunk_size=1000)
    b.load_state_dict(roundtrip(a.state_dict()))
    for n in (100, 999, 1, 2500):
        assert all(torch.equal(u, v) for u, v in zip(a.next(n), b.next(n), strict=True))
    with pytest.raises(ConfigError, match="cannot resume a stream source"):
        StreamSource(cfg, seed=3, chunk_size=1000).load_state_dict(a.state_dict())


def test_stream_applies_corruption() -> None:
    cfg = DataConfig(regime="stream", label_noise=0.2, duplicate_easy=0.1)
    _, _, corrupted = StreamSource(cfg, seed=0).next(N)
    assert within_binomial(int(corrupted.sum()), N, 1 - 0.8 * 0.9)


def test_make_source_picks_the_regime() -> None:
    fixed_cfg = DataConfig(train_size=100, test_size=10, clean_size=10)
    fixed = make_source(fixed_cfg, load_splits(fixed_cfg), seed=0)
    stream_cfg = DataConfig(regime="stream", test_size=10, clean_size=10)
    stream = make_source(stream_cfg, load_splits(stream_cfg), seed=0)
    assert isinstance(fixed, FixedSource) and isinstance(stream, StreamSource)
    assert isinstance(fixed, BatchSource) and isinstance(stream, BatchSource)
    x, y, corrupted = stream.next(0)
    assert x.shape == (0, 40) and len(y) == 0 and len(corrupted) == 0


# ---------------------------------------------------------------------------------------------
# npz files
# ---------------------------------------------------------------------------------------------


def npz_arrays(n: int = 200, n_test: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(n, 2, 3)),
        "y": rng.integers(0, 4, n),
        "x_test": rng.normal(size=(n_test, 2, 3)),
        "y_test": rng.integers(0, 4, n_test),
    }


def write_npz(tmp_path: Path, arrays: dict[str, np.ndarray]) -> DataConfig:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return DataConfig(name="npz", path=str(path), clean_size=20)


def test_npz_loads_and_carves_a_clean_split(tmp_path: Path) -> None:
    arrays = npz_arrays()
    splits = load_splits(write_npz(tmp_path, arrays))
    assert splits.input_shape == (2, 3) and splits.num_classes == 4
    assert len(splits.clean_y) == 20 and len(splits.train_y) == 180
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    np.testing.assert_array_equal(splits.test_x.numpy(), arrays["x_test"].astype(np.float32))
    # Clean and training examples partition the file's training set.
    rows = torch.cat([splits.train_x, splits.clean_x]).reshape(200, -1)
    original = torch.from_numpy(arrays["x"].astype(np.float32)).reshape(200, -1)
    assert torch.equal(torch.unique(rows, dim=0), torch.unique(original, dim=0))


def test_npz_uses_given_clean_split(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"x_clean": np.zeros((7, 2, 3)), "y_clean": np.arange(7) % 4}
    splits = load_splits(write_npz(tmp_path, arrays))
    assert len(splits.clean_y) == 7 and len(splits.train_y) == 200


def test_npz_training_data_are_corrupted_but_not_test(tmp_path: Path) -> None:
    arrays = npz_arrays(n=4000)
    arrays["corrupted"] = np.zeros(4000, dtype=bool)  # a file that says it is clean
    cfg = write_npz(tmp_path, arrays).model_copy(update={"label_noise": 0.25})
    splits = load_splits(cfg)
    assert splits.train_corrupted is not None
    assert within_binomial(int(splits.train_corrupted.sum()), 3980, 0.25)
    assert torch.equal(splits.test_y, torch.from_numpy(arrays["y_test"]))


def test_npz_without_a_corruption_mask_cannot_say_what_is_corrupted(tmp_path: Path) -> None:
    cfg = write_npz(tmp_path, npz_arrays(n=400)).model_copy(update={"label_noise": 0.25})
    assert load_splits(cfg).train_corrupted is None  # unknown, not "nothing corrupted"


def test_npz_corruption_mask_combines_with_injected_noise(tmp_path: Path) -> None:
    arrays = npz_arrays(n=4000)
    marked = np.zeros(4000, dtype=bool)
    marked[::2] = True  # the file says every other example is corrupted
    arrays |= {"corrupted": marked, "x_clean": np.zeros((7, 2, 3)), "y_clean": np.arange(7) % 4}
    splits = load_splits(write_npz(tmp_path, arrays).model_copy(update={"label_noise": 0.2}))
    mask = splits.train_corrupted
    assert mask is not None and mask[::2].all()  # the file's marks stay
    # The other half: corrupted where the injected label noise flipped a label (20%).
    assert within_binomial(int(mask[1::2].sum()), 2000, 0.2)


@pytest.mark.parametrize(
    "mask", [np.zeros(7, dtype=bool), np.zeros(200, dtype=np.int64)], ids=["length", "dtype"]
)
def test_npz_corruption_mask_must_be_bool_per_example(tmp_path: Path, mask: np.ndarray) -> None:
    with pytest.raises(DataError, match=r"array 'corrupted' has dtype .* must be bool"):
        load_splits(write_npz(tmp_path, npz_arrays() | {"corrupted": mask}))


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_splits(DataConfig(name="npz", path=str(tmp_path / "absent.npz")))


def test_npz_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad.npz: cannot read"):
        load_splits(DataConfig(name="npz", path=str(tmp_path / "bad.npz")))


@pytest.mark.parametrize("key", ["x", "y", "x_test", "y_test"])
def test_npz_missing_array(tmp_path: Path, key: str) -> None:
    arrays = npz_arrays()
    del arrays[key]
    with pytest.raises(DataError, match=rf"data.npz: array '{key}' is missing; found"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_clean_arrays_come_in_pairs(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"x_clean": np.zeros((7, 2, 3))}
    with pytest.raises(DataError, match="'x_clean' is present but 'y_clean' is missing"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_labels_must_be_integers(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"y": np.zeros(200)}
    with pytest.raises(DataError, match="array 'y' has dtype float64; labels must be integers"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_labels_must_be_non_negative(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"y_test": -np.ones(50, dtype=np.int64)}
    with pytest.raises(DataError, match="array 'y_test' has label -1 at index 0; labels must be"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_labels_must_be_one_dimensional(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"y": np.zeros((200, 1), dtype=np.int64)}
    with pytest.raises(DataError, match=r"array 'y' has shape \(200, 1\); must be 1-D"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_inputs_must_be_numeric(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"x": np.full((200, 2), "a")}
    with pytest.raises(DataError, match="array 'x' has dtype <U1; must be numeric"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_inputs_need_an_example_axis(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"x": np.zeros(200)}
    with pytest.raises(DataError, match=r"array 'x' has shape \(200,\); must be \(examples"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_lengths_must_match(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"y": np.zeros(199, dtype=np.int64)}
    with pytest.raises(DataError, match="'x' has 200 examples but 'y' has 199"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_test_shape_must_match_train(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"x_test": np.zeros((50, 3, 2))}
    with pytest.raises(DataError, match=r"'x_test' has per-example shape \(3, 2\) but 'x' has"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_needs_examples(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"x_test": np.zeros((0, 2, 3)), "y_test": np.zeros(0, np.int64)}
    with pytest.raises(DataError, match="must each hold at least one example"):
        load_splits(write_npz(tmp_path, arrays))


def test_npz_clean_split_must_fit(tmp_path: Path) -> None:
    cfg = write_npz(tmp_path, npz_arrays()).model_copy(update={"clean_size": 200})
    with pytest.raises(DataError, match="cannot carve clean_size=200 clean examples out of 200"):
        load_splits(cfg)


def test_npz_rejects_pickled_arrays(tmp_path: Path) -> None:
    arrays = npz_arrays() | {"y": np.array([object()] * 200)}
    with pytest.raises(DataError, match=r"cannot read as an \.npz archive of plain arrays"):
        load_splits(write_npz(tmp_path, arrays))


# cifar10 and imagefolder (their real formats, without torchvision): tests/test_shards.py


def test_signal_noise_makes_a_related_task_and_keeps_standard_ids() -> None:
    """signal_noise scales the generator's noise; at its default the config dumps as before
    (so run ids of standard runs do not change), otherwise it is part of the dump."""
    standard, noisier = DataConfig(), DataConfig(signal_noise=4.0)
    assert "signal_noise" not in standard.model_dump(mode="json")
    assert noisier.model_dump(mode="json")["signal_noise"] == 4.0
    a = generate_mnist1d(2000, np.random.default_rng(0))
    b = generate_mnist1d(2000, np.random.default_rng(0), noise=4.0)
    assert np.array_equal(a[1], b[1])  # same labels from the same draws
    # Same draws, more noise: the signals differ and spread further from their class means.
    assert not np.allclose(a[0], b[0])
    assert b[0].std() > a[0].std()
    assert np.array_equal(a[0], generate_mnist1d(2000, np.random.default_rng(0), noise=1.0)[0])


@pytest.mark.parametrize("marked", [False, True], ids=["no mask", "mask"])
def test_selected_corrupted_is_logged_only_where_corruption_is_known(
    tmp_path: Path, marked: bool
) -> None:
    from tests.conftest import tiny_run_config
    from trainers.config import RunConfig
    from trainers.loop import RunContext, train
    from trainers.tracking import MemoryLogger

    arrays = npz_arrays(n=600) | {"x": np.random.default_rng(1).normal(size=(600, 40))}
    arrays |= {"x_test": np.random.default_rng(2).normal(size=(50, 40))}
    if marked:
        arrays["corrupted"] = np.zeros(600, dtype=bool)
    data = write_npz(tmp_path, arrays).model_dump(mode="json") | {"label_noise": 0.3}
    cfg = RunConfig.model_validate(tiny_run_config(dataset=data, budget={"steps": 10}))
    logger = MemoryLogger()
    train(cfg.resolved(), RunContext(workdir=tmp_path / "work"), logger)
    logged = [metrics for _, metrics in logger.history]
    assert logged
    if marked:
        assert all(0.0 < m["selected_corrupted"] < 1.0 for m in logged)
    else:
        assert not any("selected_corrupted" in m for m in logged)  # absent, not 0
