"""Loaders (KGAT, MMRec, RecBole, KG-only), id checks, splits and the synthetic generator."""

import os

import numpy as np
import pytest

from slifmr.data import (
    DataFormatError,
    Dataset,
    data_root,
    load_dataset,
    load_kgat,
    load_mmrec,
    load_recbole,
    make_synthetic,
    split_per_user,
)
from slifmr.data.kg_only import load_book_crossing, load_lastfm


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def kgat_dir(tmp_path):
    d = tmp_path / "kgat"
    d.mkdir()
    # user 2 has no training interactions; item 5 only occurs in test; user 3 only in user_list
    _write(d / "train.txt", "0 1 2 3\n1 0 2\n2\n")
    _write(d / "test.txt", "0 4\n1 5 1\n2 0\n")
    _write(d / "kg_final.txt", "0 0 6\n1 1 7\n5 0 6\n")
    _write(d / "user_list.txt", "org_id remap_id\n10 0\n11 1\n12 2\n13 3\n")
    np.save(d / "image_feat.npy", np.random.default_rng(0).random((6, 4)).astype(np.float32))
    np.save(d / "text_feat.npy", np.random.default_rng(1).random((6, 3)).astype(np.float64))
    return d


def test_kgat_loader(kgat_dir):
    ds = load_kgat(str(kgat_dir))
    assert (ds.num_users, ds.num_items) == (4, 6)
    assert ds.train.tolist() == [[0, 1], [0, 2], [0, 3], [1, 0], [1, 2]]
    assert ds.test.tolist() == [[0, 4], [1, 5], [1, 1], [2, 0]]
    assert ds.valid is None
    assert ds.num_entities == 8 and ds.num_relations == 2 and ds.kg.shape == (3, 3)
    assert set(ds.features) == {"image", "text"}
    assert ds.features["text"].dtype == np.float32 and ds.features["text"].shape == (6, 3)
    clean = ds.clean()
    assert clean.test.tolist() == [[0, 4], [1, 1], [1, 5], [2, 0]]
    # a user without interactions and an item only in test survive as ids
    assert ds.interaction_matrix("train").shape == (4, 6)
    only = load_kgat(str(kgat_dir), modalities=["text"])
    assert set(only.features) == {"text"}


def test_kgat_drops_test_pairs_seen_in_train(kgat_dir):
    _write(kgat_dir / "test.txt", "0 1 4\n")
    ds = load_dataset(str(kgat_dir))
    assert ds.test.tolist() == [[0, 4]]


@pytest.mark.parametrize(
    "fname, text, where, what",
    [
        ("train.txt", "0 1 2\n1 x 2\n", "train.txt:2", "integer"),
        ("train.txt", "0 1 2\n\n1 2 3.5\n", "train.txt:3", "integer"),
        ("test.txt", "0 1\n-1 2\n", "test.txt:2", "negative user"),
        ("test.txt", "0 1\n1 -2\n", "test.txt:2", "negative item"),
        ("kg_final.txt", "0 0 6\n1 1\n", "kg_final.txt:2", "expected 3 fields"),
        ("kg_final.txt", "0 0 6\n1 r 7\n", "kg_final.txt:2", "integer"),
    ],
)
def test_kgat_malformed_names_file_and_line(kgat_dir, fname, text, where, what):
    _write(kgat_dir / fname, text)
    with pytest.raises(DataFormatError) as ei:
        load_kgat(str(kgat_dir))
    msg = str(ei.value)
    assert where in msg and what in msg


def test_kgat_bad_features(kgat_dir):
    np.save(kgat_dir / "image_feat.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(DataFormatError, match="image_feat.npy: 3 feature rows"):
        load_kgat(str(kgat_dir))
    bad = np.zeros((6, 4), np.float32)
    bad[2, 1] = np.nan
    np.save(kgat_dir / "image_feat.npy", bad)
    with pytest.raises(DataFormatError, match="row 2"):
        load_kgat(str(kgat_dir))


def test_mmrec_loader(tmp_path):
    d = tmp_path / "mm"
    d.mkdir()
    _write(
        d / "toy.inter",
        "userID\titemID\trating\ttimestamp\tx_label\n"
        "0\t0\t5\t100\t0\n0\t1\t4\t101\t0\n1\t2\t3\t102\t1\n1\t0\t3\t103\t2\n2\t1\t3\t104\t0\n",
    )
    np.save(d / "image_feat.npy", np.ones((4, 2), np.float32))
    ds = load_mmrec(str(d))
    assert (ds.num_users, ds.num_items) == (3, 4)  # item 3 only has a feature row
    assert ds.train.tolist() == [[0, 0], [0, 1], [2, 1]]
    assert ds.valid.tolist() == [[1, 2]] and ds.test.tolist() == [[1, 0]]
    _write(d / "toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\t1\t7\n")
    with pytest.raises(DataFormatError, match=r"toy.inter:3: x_label"):
        load_mmrec(str(d))
    _write(d / "toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\tq\t1\n")
    with pytest.raises(DataFormatError, match=r"toy.inter:3"):
        load_mmrec(str(d))
    _write(d / "toy.inter", "user\titemID\tx_label\n0\t0\t0\n")
    with pytest.raises(DataFormatError, match=r"toy.inter:1: header"):
        load_mmrec(str(d))


def test_recbole_loader_remaps_tokens(tmp_path):
    d = tmp_path / "rb"
    d.mkdir()
    rows = [f"u{u}\tbook{i}\t1\n" for u in range(6) for i in range(u % 3, u % 3 + 4)]
    _write(d / "x.inter", "user_id:token\titem_id:token\trating:float\n" + "".join(rows))
    _write(
        d / "x.kg",
        "head_id:token\trelation_id:token\ttail_id:token\n"
        "m.b0\tgenre\tm.g1\nm.b2\tgenre\tm.g1\nm.g1\tsub\tm.g9\n",
    )
    _write(d / "x.link", "item_id:token\tentity_id:token\nbook0\tm.b0\nbook2\tm.b2\nbookZ\tm.bz\n")
    ds = load_dataset(str(d))
    assert ds.num_users == 6 and ds.num_items == 6
    assert ds.train.shape[0] + ds.test.shape[0] == 24
    # book0 -> item 0, book2 -> item 2; m.g1 and m.g9 follow the items
    assert ds.kg.tolist() == [[0, 0, 6], [2, 0, 6], [6, 1, 7]]
    assert ds.num_entities == 8 and ds.relation_names == ["genre", "sub"]
    _write(d / "x.kg", "head_id:token\trelation_id:token\ttail_id:token\nm.b0\tgenre\n")
    with pytest.raises(DataFormatError, match=r"x.kg:2: expected 3 fields"):
        load_recbole(str(d))


def test_kg_only_layouts(tmp_path):
    d = tmp_path / "lastfm"
    d.mkdir()
    _write(
        d / "user_artists.dat",
        "userID\tartistID\tweight\n5\t10\t3\n5\t11\t1\n7\t10\t2\n7\t99\t4\n9\t12\t1\n9\t11\t1\n",
    )
    _write(d / "item_index2entity_id.txt", "10\t0\n11\t1\n12\t2\n")
    _write(d / "kg.txt", "0\tmusic.genre\t3\n1\tmusic.genre\t3\n3\tmusic.parent\t4\n")
    ds = load_lastfm(str(d))
    assert ds.num_users == 3 and ds.num_items == 3
    assert ds.train.shape[0] + ds.test.shape[0] == 5  # artist 99 has no entity
    assert ds.kg.tolist() == [[0, 0, 3], [1, 0, 3], [3, 1, 4]] and ds.num_entities == 5
    _write(d / "user_artists.dat", "userID\tartistID\tweight\n5\t10\n")
    with pytest.raises(DataFormatError, match="user_artists.dat:2: expected 3 fields"):
        load_lastfm(str(d))

    b = tmp_path / "bx"
    b.mkdir()
    _write(b / "ratings_final.txt", "0\t0\t1\n0\t1\t0\n3\t1\t1\n3\t2\t1\n4\t0\t1\n")
    _write(b / "item_index2entity_id_rehashed.txt", "isbnA\t2\nisbnB\t0\nisbnC\t1\n")
    _write(b / "kg_final.txt", "2\t0\t5\n0\t0\t5\n")
    ds = load_book_crossing(str(b))
    assert ds.num_users == 3 and ds.num_items == 3
    assert ds.train.shape[0] + ds.test.shape[0] == 4
    # entity 2 is item 0, entity 0 is item 1; entity 5 becomes the first non-item entity
    assert ds.kg.tolist() == [[0, 0, 3], [1, 0, 3]]
    _write(b / "ratings_final.txt", "0\t0\t1\n0\t1\t2\n")
    with pytest.raises(DataFormatError, match="ratings_final.txt:2: label"):
        load_book_crossing(str(b))


def test_unknown_layout_and_missing_dir(tmp_path):
    with pytest.raises(DataFormatError, match="unknown layout"):
        load_dataset(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SLIFMR_DATA"):
        load_dataset(str(tmp_path / "nope"))


def test_split_per_user_properties():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 50, 2000)
    items = rng.integers(0, 300, 2000)
    from slifmr.data import unique_pairs

    pairs = unique_pairs(np.stack([users, items], 1), 300)
    kept, held = split_per_user(pairs, 0.2, seed=7)
    kept2, held2 = split_per_user(pairs, 0.2, seed=7)
    assert np.array_equal(kept, kept2) and np.array_equal(held, held2)
    kept3, _ = split_per_user(pairs, 0.2, seed=8)
    assert not np.array_equal(kept, kept3)
    allp = np.concatenate([kept, held])
    assert np.array_equal(unique_pairs(allp, 300), pairs) and allp.shape[0] == pairs.shape[0]
    cnt = np.bincount(pairs[:, 0], minlength=50)
    kcnt = np.bincount(kept[:, 0], minlength=50)
    hcnt = np.bincount(held[:, 0], minlength=50)
    assert np.all(kcnt[cnt > 0] >= 1)
    assert np.array_equal(hcnt, np.minimum(np.floor(0.2 * cnt + 0.5), np.maximum(cnt - 1, 0)))
    with pytest.raises(ValueError, match="fraction"):
        split_per_user(pairs, 1.0, 0)


def test_with_validation_is_seeded():
    ds = make_synthetic(200, 150, num_clusters=5, seed=1)
    a = ds.with_validation(0.1, seed=4)
    b = ds.with_validation(0.1, seed=4)
    assert np.array_equal(a.valid, b.valid) and a.valid.shape[0] > 0
    assert a.train.shape[0] + a.valid.shape[0] == ds.train.shape[0]


def test_dataset_validation_errors():
    with pytest.raises(DataFormatError, match="train ids exceed"):
        Dataset("x", 2, 2, train=np.array([[0, 5]]), test=np.zeros((0, 2), np.int64))
    with pytest.raises(DataFormatError, match="kg relation id"):
        Dataset(
            "x",
            2,
            2,
            train=np.array([[0, 1]]),
            test=np.zeros((0, 2), np.int64),
            kg=np.array([[0, 3, 1]]),
            num_entities=2,
            num_relations=1,
        )


def test_synthetic_generator_agrees_and_is_seeded():
    ds = make_synthetic(800, 600, num_clusters=8, seed=5)
    ds2 = make_synthetic(800, 600, num_clusters=8, seed=5)
    assert np.array_equal(ds.train, ds2.train) and np.array_equal(ds.features["text"], ds2.features["text"])
    assert not np.array_equal(make_synthetic(800, 600, num_clusters=8, seed=6).train, ds.train)
    act = np.bincount(ds.train[:, 0], minlength=800)
    pop = np.bincount(ds.train[:, 1], minlength=600)
    assert act.max() > 3 * np.median(act)  # heavy-tailed users
    assert pop.max() > 5 * np.median(pop)  # heavy-tailed items
    # items a user interacted with are more similar (features, KG) than random item pairs
    rng = np.random.default_rng(0)
    order = np.argsort(ds.train[:, 0], kind="stable")
    tr = ds.train[order]
    same = tr[:-1, 0] == tr[1:, 0]
    a, b = tr[:-1, 1][same], tr[1:, 1][same]
    f = ds.features["image"] / np.linalg.norm(ds.features["image"], axis=1, keepdims=True)
    co = (f[a] * f[b]).sum(1).mean()
    ra, rb = rng.integers(0, 600, a.size), rng.integers(0, 600, a.size)
    rnd = (f[ra] * f[rb]).sum(1).mean()
    assert co > rnd + 0.2
    tail = {r: t for r, t in zip(*np.unique(ds.kg[ds.kg[:, 1] == 0][:, [0, 2]], axis=0).T)}
    ta = np.array([tail[x] for x in a[:2000]]) // 3
    tb = np.array([tail[x] for x in b[:2000]]) // 3
    assert (ta == tb).mean() > 0.4  # co-interacted items share the cluster attribute
    assert ds.kg[:, [0, 2]].max() < ds.num_entities
    none = make_synthetic(50, 40, num_clusters=4, modalities={}, kg_relations=0)
    assert none.features == {} and none.kg is None
    with pytest.raises(ValueError, match="num_clusters"):
        make_synthetic(10, 5, num_clusters=9)


# ------------------------------------------------------------------ real data (skipped if absent)
def _real(name):
    path = os.path.join(data_root(), name)
    if not os.path.isdir(path):
        pytest.skip(f"dataset {name} not found under {data_root()} (set SLIFMR_DATA)")
    return path


def test_real_ml1m():
    ds = load_dataset(_real("ml-1m-kg-mm"))
    assert (ds.num_users, ds.num_items) == (6038, 3533)
    assert ds.train.shape[0] == 457818 and ds.test.shape[0] == 117462
    assert ds.num_relations == 7 and ds.kg.shape[0] == 20782 and ds.num_entities == 8287
    assert ds.features["image"].shape == (3533, 224) and ds.features["text"].shape == (3533, 384)
    assert np.setdiff1d(np.arange(6038), ds.train[:, 0]).size == 1  # user without interactions
    assert np.setdiff1d(np.unique(ds.test[:, 1]), ds.train[:, 1]).size == 29  # test items unseen in train


def test_real_kg_only():
    lf = load_dataset(_real("lastfm-kg"))
    assert (lf.num_users, lf.num_items) == (1872, 3846)
    assert (
        lf.train.shape[0] + lf.test.shape[0] == 21173 and lf.kg.shape[0] == 15518 and lf.num_relations == 60
    )
    bx = load_dataset(_real("book-crossing-kg"))
    assert (bx.num_users, bx.num_items) == (17860, 14967)
    assert bx.train.shape[0] + bx.test.shape[0] == 69873 and bx.kg.shape[0] == 151500
    assert bx.num_relations == 25 and bx.num_entities == 77903


# ------------------------------------------------------------------ bounds and header checks
def test_ids_are_bounded_by_what_the_files_define(kgat_dir):
    """An id may exceed the ids that occur (items only in features, users only in user_list),
    but not what the directory can define: no table is sized by a corrupt id."""
    _write(kgat_dir / "train.txt", "0 0 1\n1 2\n")
    _write(kgat_dir / "test.txt", "0 5\n")  # item 5: a feature row, no interaction before it
    ds = load_kgat(str(kgat_dir))
    assert ds.num_items == 6 and ds.num_users == 4
    _write(kgat_dir / "test.txt", "0 5\n7 1\n")  # 4 user lines + 4 user_list rows: users 0..7
    assert load_kgat(str(kgat_dir)).num_users == 8
    _write(kgat_dir / "test.txt", "0 5\n8 1\n")
    with pytest.raises(DataFormatError, match=r"test.txt:2: user id 8 is too large.*at most 8 user"):
        load_kgat(str(kgat_dir))
    _write(kgat_dir / "test.txt", "0 5\n")
    _write(kgat_dir / "kg_final.txt", "0 0 6\n1 1 13\n")  # 6 items + 2 x 2 triples = 10 entities
    with pytest.raises(DataFormatError, match=r"kg_final.txt:2: entity id 13 is too large"):
        load_kgat(str(kgat_dir))
    _write(kgat_dir / "kg_final.txt", "0 0 6\n\n1 2 9\n")  # 2 triples: relations 0 and 1 at most
    with pytest.raises(DataFormatError, match=r"kg_final.txt:3: relation id 2 is too large"):
        load_kgat(str(kgat_dir))


def test_id_beyond_int64_names_its_line(kgat_dir):
    # numpy's parser saturates at 2^63-1; the check must blame train.txt, not a feature file
    _write(kgat_dir / "train.txt", "0 1 2\n1 99999999999999999999 2\n")
    with pytest.raises(DataFormatError, match=r"train.txt:2: integer '99999999999999999999' is out of range"):
        load_kgat(str(kgat_dir))


def test_npy_header_is_checked_before_reading(kgat_dir, monkeypatch):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**5)}
    )
    (kgat_dir / "image_feat.npy").write_bytes(buf.getvalue())
    assert len(buf.getvalue()) <= 128

    def no_load(*a, **k):
        raise AssertionError("np.load must not be reached")

    monkeypatch.setattr(np, "load", no_load)
    with pytest.raises(DataFormatError, match=r"image_feat.npy: the header says shape \(10000000, 100000\)"):
        load_kgat(str(kgat_dir))


@pytest.mark.parametrize(
    "arr, what",
    [
        (np.ones((6, 4), np.complex64), "real number type"),
        (np.array([[None] * 4] * 6, dtype=object), "plain number type"),
        (np.ones((6, 4), bool), "real number type"),
    ],
)
def test_npy_dtypes_rejected(kgat_dir, arr, what):
    np.save(kgat_dir / "image_feat.npy", arr, allow_pickle=True)
    with pytest.raises(DataFormatError, match=what):
        load_kgat(str(kgat_dir))


def test_empty_splits_are_errors(kgat_dir, tmp_path):
    for name in ("train.txt", "test.txt"):
        keep = (kgat_dir / name).read_text()
        _write(kgat_dir / name, "")
        with pytest.raises(DataFormatError, match=rf"{name}: no interactions"):
            load_kgat(str(kgat_dir))
        _write(kgat_dir / name, keep)
    _write(kgat_dir / "test.txt", "0 1\n")  # a pair train already has: nothing left to test
    with pytest.raises(DataFormatError, match="no test interactions left"):
        load_dataset(str(kgat_dir))
    with pytest.raises(DataFormatError, match="not a directory"):
        load_dataset(str(kgat_dir / "train.txt"))


def test_parse_int_tokens_and_delimited_lines(tmp_path):
    from slifmr.data._io import parse_int_tokens, read_delimited

    p = tmp_path / "m.txt"
    _write(p, "a\t1\n\nb\t-2\n")
    _, rows, lines = read_delimited(str(p), header=False, with_lines=True)
    assert lines == [1, 3]
    assert parse_int_tokens(str(p), [r[1] for r in rows], lines, "entity").tolist() == [1, -2]
    with pytest.raises(DataFormatError, match=r"m.txt:3: entity: expected a non-negative"):
        parse_int_tokens(str(p), [r[1] for r in rows], lines, "entity", nonnegative=True)
    with pytest.raises(DataFormatError, match=r"m.txt:3: entity: integer .* out of range"):
        parse_int_tokens(str(p), ["1", "9" * 30], lines, "entity")


def test_feature_file_variants_are_modalities(tmp_path):
    """``<m>_feat.npy`` is modality m, ``<m>_feat_<v>.npy`` modality ``<m>_<v>``; masks and
    other .npy files are not features."""
    from slifmr.data._io import feature_files

    for name in (
        "image_feat.npy",
        "text_feat.npy",
        "text_feat_llm.npy",
        "text_llm_mask.npy",
        "image_mask.npy",
        "_feat.npy",
        "text_feat_.npy",
    ):
        np.save(tmp_path / name, np.zeros((2, 2), np.float32))
    found = feature_files(str(tmp_path))
    assert {m: os.path.basename(f) for m, f in found.items()} == {
        "image": "image_feat.npy",
        "text": "text_feat.npy",
        "text_llm": "text_feat_llm.npy",
    }
