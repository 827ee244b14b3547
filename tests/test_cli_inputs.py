"""Bad configuration values and bad data files through the real ``slifmr`` entry point.

Every case is a valid tiny dataset (or configuration) with one thing broken. Each must be
rejected before any training with the project's own error (``ConfigError`` /
``DataFormatError`` / a missing file), printed as one ``slifmr: error: ...`` line that names the
key (or ``file:line``) and the value, and exit status 2 -- never a traceback, a huge allocation
or a run that trains on nothing. Most cases call ``slifmr.cli.main`` in-process (fast); a few
run ``python -m slifmr`` in a subprocess, exactly as a user would.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from slifmr.cli import main
from slifmr.data import load_dataset

TINY = (
    '{"num_users": 40, "num_items": 30, "num_clusters": 3, "mean_interactions": 6, '
    '"modalities": {"text": 4}, "kg_relations": 1}'
)
BIG_INT = "9" * 25  # beyond int64


# --------------------------------------------------------------------------- fixtures
def _feat(rows, cols, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).random((rows, cols)).astype(dtype)


def _npy_bytes(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _npy_header_only(shape, descr="<f4") -> bytes:
    """A .npy file whose header claims ``shape`` but that holds no data (128 bytes in all)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _nan_row():
    f = _feat(6, 4)
    f[2, 1] = np.nan
    return f


LAYOUTS = {
    # KGAT: users 0..2, items 0..5 (item 5 only in test), entities 6 and 7 beyond the items
    "kgat": {
        "train.txt": "0 0 1 2\n1 1 2 3\n2 3 4\n",
        "test.txt": "0 3\n1 4\n2 5\n",
        "kg_final.txt": "0 0 6\n1 1 7\n4 0 6\n",
        "image_feat.npy": _feat(6, 4),
        "text_feat.npy": _feat(6, 3, np.float64, 1),
    },
    "mmrec": {
        "toy.inter": "userID\titemID\trating\tx_label\n0\t0\t5\t0\n0\t1\t4\t0\n1\t1\t3\t0\n"
        "1\t2\t3\t1\n1\t3\t3\t2\n0\t2\t1\t2\n",
        "image_feat.npy": _feat(4, 2),
    },
    "recbole": {
        "x.inter": "user_id:token\titem_id:token\trating:float\n"
        + "".join(f"u{u}\tb{i}\t1\n" for u in range(4) for i in range(u, u + 3)),
        "x.kg": "head_id:token\trelation_id:token\ttail_id:token\nm.b0\tgenre\tm.g\n",
        "x.link": "item_id:token\tentity_id:token\nb0\tm.b0\n",
    },
    "lastfm": {
        "user_artists.dat": "userID\tartistID\tweight\n"
        + "".join(f"{u}\t{a}\t1\n" for u in (5, 7, 9) for a in (10, 11, 12)),
        "item_index2entity_id.txt": "10\t0\n11\t1\n12\t2\n",
        "kg.txt": "0\tmusic.genre\t3\n1\tmusic.genre\t3\n3\tmusic.parent\t4\n",
    },
    "bx": {
        "ratings_final.txt": "".join(f"{u}\t{i}\t1\n" for u in (0, 3, 4) for i in (0, 1, 2)) + "0\t2\t0\n",
        "item_index2entity_id_rehashed.txt": "isbnA\t2\nisbnB\t0\nisbnC\t1\n",
        "kg_final.txt": "2\t0\t5\n0\t1\t5\n",
    },
}


def _make(root, layout, changes=None):
    """Write ``layout`` with ``changes`` applied (None removes a file) under ``root``."""
    d = root / layout
    d.mkdir(exist_ok=True)
    files = dict(LAYOUTS[layout])
    files.update(changes or {})
    for name, content in files.items():
        if content is None:
            continue
        p = d / name
        if isinstance(content, np.ndarray):
            np.save(p, content)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return d


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fixtures_are_valid(tmp_path, layout):
    """The unbroken datasets load, so that each case below fails for its own change only."""
    ds = load_dataset(str(_make(tmp_path, layout)))
    assert ds.train.shape[0] > 0 and ds.test.shape[0] > 0


def test_readme_reorder_none_trains(tmp_path, capsys):
    """The README's own ``--set reorder=none`` (once parsed as null) trains on a KGAT directory."""
    d = _make(tmp_path, "kgat")
    rc = main(
        [
            "train",
            "--data",
            str(d),
            "--output",
            str(tmp_path / "run"),
            "--quiet",
            "--epochs",
            "1",
            "--set",
            "reorder=none",
            "--set",
            "embed_dim=8",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["reorder"] == "none"


# --------------------------------------------------------------------------- the table
# (id, layout or None, {file: content}, extra argv, config file (name, text) or None,
#  [parts the error line must contain])
def _case(cid, parts, layout=None, files=None, argv=(), config=None):
    return pytest.param(layout, files or {}, list(argv), config, parts, id=cid)


CASES = [
    # ---- --set values and options
    _case(
        "set-lr-nan",
        ["--set lr=nan", "config key 'lr'", "finite number > 0", "got nan"],
        argv=["--set", "lr=nan"],
    ),
    _case("set-lr-inf", ["config key 'lr'", "got inf"], argv=["--set", "lr=inf"]),
    _case("set-lr-negative", ["config key 'lr'", "got -0.1"], argv=["--set", "lr=-0.1"]),
    _case("set-lr-word", ["config key 'lr'", "got 'fast'"], argv=["--set", "lr=fast"]),
    _case(
        "set-backend-bogus",
        ["config key 'backend'", "expected one of 'auto'", "got 'bogus'"],
        argv=["--set", "backend=bogus"],
    ),
    _case(
        "set-seed-negative",
        ["--set seed=-1", "config key 'seed'", "[0, 2^63-1]", "got -1"],
        argv=["--set", "seed=-1"],
    ),
    _case("flag-seed-negative", ["--seed", "config key 'seed'", "got -1"], argv=["--seed", "-1"]),
    _case("set-seed-2^63", ["config key 'seed'", "got 9223372036854775808"], argv=["--set", f"seed={2**63}"]),
    _case(
        "set-reorder-bogus",
        ["config key 'reorder'", "'none'", "got 'sideways'"],
        argv=["--set", "reorder=sideways"],
    ),
    _case(
        "set-device-tpu",
        ["config key 'device'", "'cpu', 'cuda' or 'cuda:N'", "got 'tpu'"],
        argv=["--set", "device=tpu"],
    ),
    _case(
        "set-device-absent",
        ["config key 'device'", "'cuda:7' is not available here"],
        argv=["--set", "device=cuda:7"],
    ),
    _case(
        "set-unknown-key", ["--set bogus=1", "unknown configuration key 'bogus'"], argv=["--set", "bogus=1"]
    ),
    _case(
        "set-key-typo", ["unknown configuration key 'lrr'", "did you mean 'lr'"], argv=["--set", "lrr=0.1"]
    ),
    _case("set-no-equals", ["--set lr", "expected KEY=VALUE"], argv=["--set", "lr"]),
    _case("set-epochs-zero", ["config key 'epochs'", "[1, 2^31-1]", "got 0"], argv=["--set", "epochs=0"]),
    _case("set-epochs-float", ["config key 'epochs'", "got '1.5'"], argv=["--set", "epochs=1.5"]),
    _case(
        "set-epochs-5000-digits",
        ["config key 'epochs'", "expected an integer"],
        argv=["--set", "epochs=1" + "0" * 5000],
    ),
    _case(
        "set-embed-dim-huge",
        ["config key 'embed_dim'", "[1, 4096]", "got 100000000"],
        argv=["--set", "embed_dim=100000000"],
    ),
    _case(
        "set-threads-huge", ["config key 'num_threads'", "[0, 1024]"], argv=["--set", "num_threads=100000000"]
    ),
    _case("set-layers-huge", ["config key 'num_layers'", "[0, 64]"], argv=["--set", "num_layers=1000"]),
    _case(
        "set-beta-range",
        ["config key 'feedback_beta'", "in [0, 1]", "got 2.0"],
        argv=["--set", "feedback_beta=2"],
    ),
    _case(
        "set-valid-fraction-1",
        ["config key 'valid_fraction'", "in [0, 1)"],
        argv=["--set", "valid_fraction=1"],
    ),
    _case(
        "set-bool-word",
        ["config key 'use_kg'", "expected true or false", "got 'maybe'"],
        argv=["--set", "use_kg=maybe"],
    ),
    _case(
        "set-eval-ks-zero", ["config key 'eval_ks'", "integers >= 1", "got [0]"], argv=["--set", "eval_ks=0"]
    ),
    _case("set-eval-ks-empty", ["config key 'eval_ks'", "non-empty"], argv=["--set", "eval_ks=[]"]),
    _case(
        "set-feedback-in-unknown",
        ["config key 'feedback_in'", "got unknown ['x']"],
        argv=["--set", "feedback_in=kg,x"],
    ),
    _case(
        "set-model-unknown", ["config key 'model'", "'lattice'", "got 'bert'"], argv=["--set", "model=bert"]
    ),
    _case("set-init-unknown", ["config key 'init'", "got 'zeros'"], argv=["--set", "init=zeros"]),
    _case(
        "set-synthetic-negative",
        ["config key 'synthetic'", "num_users", "got -1"],
        argv=["--set", 'synthetic={"num_users": -1}'],
    ),
    _case(
        "set-synthetic-unknown",
        ["config key 'synthetic'", "unknown parameter 'users'"],
        argv=["--set", 'synthetic={"users": 5}'],
    ),
    _case(
        "set-synthetic-not-mapping",
        ["config key 'synthetic'", "expected a mapping"],
        argv=["--set", "synthetic=[1"],
    ),
    # ---- configuration files
    _case(
        "yaml-lr-word",
        ["c.yaml:2: config key 'lr'", "got 'fast'"],
        config=("c.yaml", "epochs: 1\nlr: fast\n"),
    ),
    _case(
        "yaml-unknown-key",
        ["c.yaml:2: unknown configuration key 'bogus'"],
        config=("c.yaml", "epochs: 1\nbogus: 1\n"),
    ),
    _case(
        "yaml-duplicate-key",
        ["c.yaml:3: key 'lr' given twice (first on line 1)"],
        config=("c.yaml", "lr: 0.1\nepochs: 1\nlr: 0.2\n"),
    ),
    _case(
        "yaml-nested-duplicate",
        ["c.yaml:3: key 'num_users' given twice"],
        config=("c.yaml", "synthetic:\n  num_users: 10\n  num_users: 20\n"),
    ),
    _case("yaml-malformed", ["c.yaml:", "invalid YAML"], config=("c.yaml", "epochs: [1\n")),
    _case(
        "yaml-not-mapping", ["c.yaml: the configuration must be a mapping"], config=("c.yaml", "- 1\n- 2\n")
    ),
    _case(
        "yaml-string-for-int",
        ["c.yaml:1: config key 'epochs'", "got '3'"],
        config=("c.yaml", 'epochs: "3"\n'),
    ),
    _case(
        "yaml-int-for-bool",
        ["c.yaml:1: config key 'use_kg'", "expected true or false, got 1"],
        config=("c.yaml", "use_kg: 1\n"),
    ),
    _case(
        "yaml-null-reorder",
        ["c.yaml:1: config key 'reorder'", "got None"],
        config=("c.yaml", "reorder: null\n"),
    ),
    _case(
        "yaml-python-tag",
        ["c.yaml:1: invalid YAML"],
        config=("c.yaml", "lr: !!python/object/apply:os.system ['echo hi']\n"),
    ),
    _case(
        "yaml-5000-digit-int",
        ["c.yaml: invalid YAML", "digits"],
        config=("c.yaml", "epochs: 1" + "0" * 5000 + "\n"),
    ),
    # 9^10 integers if expanded: the message must show a bounded prefix, and fast
    _case(
        "yaml-alias-bomb",
        ["c.yaml:1: config key 'eval_ks'", "got [[1, 1, 1,"],
        config=(
            "c.yaml",
            "eval_ks:\n  - &a [1,1,1,1,1,1,1,1,1]\n"
            + "".join(
                f"  - &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                for p, c in zip("abcdefghi", "bcdefghij")
            ),
        ),
    ),
    _case("yaml-not-utf8", ["c.yaml: not UTF-8"], config=("c.yaml", b"lr: \xff\xfe\n")),
    _case(
        "json-duplicate-key", ["c.json: key 'lr' given twice"], config=("c.json", '{"lr": 0.1, "lr": 0.2}')
    ),
    _case("json-malformed", ["c.json:1: invalid JSON"], config=("c.json", '{"lr": 0.1,')),
    _case("json-nan", ["c.json: config key 'lr'", "got nan"], config=("c.json", '{"lr": NaN}')),
    _case(
        "json-wrong-type",
        ["c.json: config key 'epochs'", "got 'ten'"],
        config=("c.json", '{"epochs": "ten"}'),
    ),
    _case("config-missing", ["config file not found"], argv=["--config", "/nonexistent/c.yaml"]),
    # ---- --data paths
    _case(
        "data-missing-dir",
        ["dataset directory not found", "SLIFMR_DATA"],
        argv=["--data", "/nonexistent/dataset"],
    ),
    _case("data-is-a-file", ["not a directory"], layout="kgat", argv=["--data", "@kgat/train.txt"]),
    _case(
        "data-unknown-layout", ["unknown layout"], layout="kgat", files={"train.txt": None, "test.txt": None}
    ),
    # ---- KGAT layout
    _case("kgat-empty-train", ["train.txt: no interactions"], "kgat", {"train.txt": ""}),
    _case("kgat-empty-test", ["test.txt: no interactions"], "kgat", {"test.txt": "\n\n"}),
    _case("kgat-train-users-only", ["train.txt: no interactions"], "kgat", {"train.txt": "0\n1\n"}),
    _case("kgat-empty-valid", ["valid.txt: no interactions"], "kgat", {"valid.txt": ""}),
    _case("kgat-test-all-in-train", ["no test interactions left"], "kgat", {"test.txt": "0 0\n1 1\n"}),
    _case(
        "kgat-not-integer",
        ["train.txt:2: expected an integer, got 'x'"],
        "kgat",
        {"train.txt": "0 0 1\n1 x 2\n"},
    ),
    _case(
        "kgat-float-id",
        ["train.txt:3: expected an integer, got '3.5'"],
        "kgat",
        {"train.txt": "0 0 1\n\n1 2 3.5\n"},
    ),
    _case("kgat-negative-user", ["test.txt:2: negative user id -1"], "kgat", {"test.txt": "0 3\n-1 4\n"}),
    _case("kgat-negative-item", ["train.txt:1: negative item id -2"], "kgat", {"train.txt": "0 -2\n1 1\n"}),
    _case(
        "kgat-id-beyond-int64",
        ["train.txt:2: integer", "out of range"],
        "kgat",
        {"train.txt": f"0 0 1\n1 {BIG_INT}\n"},
    ),
    _case(
        "kgat-user-3e9",
        ["train.txt:2: user id 3000000000 is too large", "at most 5 user ids"],
        "kgat",
        {"train.txt": "0 0 1\n3000000000 2\n"},
    ),
    _case(
        "kgat-item-3e9",
        ["test.txt:3: item id 3000000000 is too large"],
        "kgat",
        {"test.txt": "0 3\n1 4\n2 3000000000\n"},
    ),
    _case(
        "kgat-kg-entity-3e9",
        ["kg_final.txt:2: entity id 3000000000 is too large", "the items plus two per triple"],
        "kgat",
        {"kg_final.txt": "0 0 6\n1 1 3000000000\n"},
    ),
    _case(
        "kgat-kg-relation-1e8",
        ["kg_final.txt:3: relation id 100000000 is too large", "one per triple"],
        "kgat",
        {"kg_final.txt": "0 0 6\n\n1 100000000 7\n"},
    ),
    _case("kgat-kg-negative", ["kg_final.txt:2: negative id"], "kgat", {"kg_final.txt": "0 0 6\n1 -1 7\n"}),
    _case(
        "kgat-kg-columns",
        ["kg_final.txt:2: expected 3 fields (head relation tail), got 2"],
        "kgat",
        {"kg_final.txt": "0 0 6\n1 1\n"},
    ),
    _case(
        "kgat-kg-not-integer",
        ["kg_final.txt:1: expected an integer, got 'r'"],
        "kgat",
        {"kg_final.txt": "0 r 6\n"},
    ),
    _case(
        "kgat-user-list-remap",
        ["user_list.txt:3: remap id 900 is too large"],
        "kgat",
        {"user_list.txt": "org_id remap_id\n10 0\n11 900\n"},
    ),
    _case(
        "kgat-item-list-word",
        ["item_list.txt:2: last field must be the non-negative integer"],
        "kgat",
        {"item_list.txt": "org_id remap_id\n10 zero\n"},
    ),
    _case(
        "npy-header-lies",
        ["image_feat.npy: the header says shape (10000000, 100000)", "holds 0 bytes"],
        "kgat",
        {"image_feat.npy": _npy_header_only((10**7, 10**5))},
    ),
    _case(
        "npy-truncated",
        ["image_feat.npy: the header says shape (6, 4)"],
        "kgat",
        {"image_feat.npy": _npy_bytes(_feat(6, 4))[:-5]},
    ),
    _case(
        "npy-pickled-object",
        ["image_feat.npy: feature dtype must be a plain number type", "object"],
        "kgat",
        {"image_feat.npy": _npy_bytes(np.array([[{"x": 1}]] * 6, dtype=object), True)},
    ),
    _case(
        "npy-not-npy", ["image_feat.npy: not a readable .npy array"], "kgat", {"image_feat.npy": "0.1 0.2\n"}
    ),
    _case(
        "npy-complex",
        ["image_feat.npy: feature dtype must be a real number type", "complex64", "imaginary part"],
        "kgat",
        {"image_feat.npy": _feat(6, 4).astype(np.complex64)},
    ),
    _case(
        "npy-bool",
        ["image_feat.npy: feature dtype must be a real number type", "bool"],
        "kgat",
        {"image_feat.npy": np.ones((6, 4), bool)},
    ),
    _case(
        "npy-structured",
        ["image_feat.npy: feature dtype must be a plain number type"],
        "kgat",
        {"image_feat.npy": np.zeros(6, dtype=[("a", "<f4"), ("b", "<f4")])},
    ),
    _case(
        "npy-nan",
        ["image_feat.npy: row 2 (item 2) contains NaN or inf"],
        "kgat",
        {"image_feat.npy": _nan_row()},
    ),
    _case(
        "npy-beyond-float32",
        ["text_feat.npy: row 0 (item 0)", "float32's range"],
        "kgat",
        {"text_feat.npy": np.full((6, 3), 1e300)},
    ),
    _case(
        "npy-1d",
        ["image_feat.npy: feature matrix must be 2-D", "(6,)"],
        "kgat",
        {"image_feat.npy": np.ones(6, np.float32)},
    ),
    _case(
        "npy-no-columns",
        ["image_feat.npy: feature matrix has no columns"],
        "kgat",
        {"image_feat.npy": np.ones((6, 0), np.float32)},
    ),
    _case(
        "npy-too-few-rows",
        ["image_feat.npy: 3 feature rows but the interactions use 6 items"],
        "kgat",
        {"image_feat.npy": _feat(3, 4)},
    ),
    _case(
        "npy-rows-disagree",
        ["feat.npy: 6 rows, but another feature file has 9"],
        "kgat",
        {"text_feat.npy": _feat(9, 3)},
    ),
    # ---- MMRec layout
    _case(
        "mmrec-header",
        ["toy.inter:1: header must name userID, itemID and x_label"],
        "mmrec",
        {"toy.inter": "user\titemID\tx_label\n0\t0\t0\n"},
    ),
    _case(
        "mmrec-header-only",
        ["toy.inter: no interactions"],
        "mmrec",
        {"toy.inter": "userID\titemID\tx_label\n"},
    ),
    _case(
        "mmrec-float-user",
        ["toy.inter:3: userID must be a non-negative integer, got 1.5"],
        "mmrec",
        {"toy.inter": "userID\titemID\tx_label\n0\t0\t0\n1.5\t1\t2\n"},
    ),
    _case(
        "mmrec-item-1e12",
        ["toy.inter:4: item id 1000000000000 is too large"],
        "mmrec",
        {"toy.inter": "userID\titemID\tx_label\n0\t0\t0\n\n1\t1e12\t2\n"},
    ),
    _case(
        "mmrec-user-1e300",
        ["toy.inter:2: user id 1e+300 is too large"],
        "mmrec",
        {"toy.inter": "userID\titemID\tx_label\n1e300\t0\t0\n0\t1\t2\n"},
    ),
    _case(
        "mmrec-label",
        ["toy.inter:4: x_label must be 0, 1 or 2, got 7"],
        "mmrec",
        {"toy.inter": "userID\titemID\tx_label\n0\t0\t0\n\n0\t1\t7\n"},
    ),
    _case(
        "mmrec-no-test",
        ["toy.inter: no test interactions (no row with x_label 2)"],
        "mmrec",
        {"toy.inter": "userID\titemID\tx_label\n0\t0\t0\n0\t1\t1\n"},
    ),
    _case(
        "mmrec-nan-rating",
        ["toy.inter:3: expected a finite number, got 'nan'"],
        "mmrec",
        {"toy.inter": "userID\titemID\trating\tx_label\n0\t0\t1\t0\n0\t1\tnan\t2\n"},
    ),
    _case(
        "mmrec-columns",
        ["toy.inter:3: expected 3 fields, got 2"],
        "mmrec",
        {"toy.inter": "userID\titemID\tx_label\n0\t0\t0\n0\t1\n"},
    ),
    _case(
        "mmrec-npy-complex",
        ["image_feat.npy: feature dtype must be a real number type"],
        "mmrec",
        {"image_feat.npy": _feat(4, 2).astype(np.complex128)},
    ),
    # ---- RecBole atomic files
    _case(
        "recbole-header-only",
        ["x.inter: no interactions"],
        "recbole",
        {"x.inter": "user_id:token\titem_id:token\n"},
    ),
    _case(
        "recbole-kg-missing-column",
        ["x.kg:1: header must contain a 'tail_id' field"],
        "recbole",
        {"x.kg": "head_id:token\trelation_id:token\ttail:token\nm.b0\tgenre\tm.g\n"},
    ),
    _case(
        "recbole-kg-columns",
        ["x.kg:2: expected 3 fields"],
        "recbole",
        {"x.kg": "head_id:token\trelation_id:token\ttail_id:token\nm.b0\tgenre\n"},
    ),
    _case(
        "recbole-one-interaction-each",
        ["no test interactions left"],
        "recbole",
        {"x.inter": "user_id:token\titem_id:token\nu1\tb1\nu2\tb2\n"},
    ),
    # ---- Last.FM KG
    _case(
        "lastfm-columns",
        ["user_artists.dat:2: expected 3 fields"],
        "lastfm",
        {"user_artists.dat": "userID\tartistID\tweight\n5\t10\n"},
    ),
    _case(
        "lastfm-header-only",
        ["user_artists.dat: no interactions"],
        "lastfm",
        {"user_artists.dat": "userID\tartistID\tweight\n"},
    ),
    _case(
        "lastfm-unknown-artists",
        ["user_artists.dat: no interactions with an artist listed"],
        "lastfm",
        {"user_artists.dat": "userID\tartistID\tweight\n5\t77\t1\n"},
    ),
    _case(
        "lastfm-kg-entity-int64",
        ["kg.txt:2: tail entity id", "out of range"],
        "lastfm",
        {"kg.txt": f"0\tmusic.genre\t3\n1\tmusic.genre\t{BIG_INT}\n"},
    ),
    _case(
        "lastfm-kg-entity-word",
        ["kg.txt:1: head entity id: expected an integer, got 'm.x'"],
        "lastfm",
        {"kg.txt": "m.x\tmusic.genre\t3\n"},
    ),
    _case(
        "lastfm-duplicate-artist",
        ["item_index2entity_id.txt:3: artist id 10 occurs twice"],
        "lastfm",
        {"item_index2entity_id.txt": "10\t0\n11\t1\n10\t2\n"},
    ),
    # ---- Book-Crossing KG
    _case(
        "bx-label",
        ["ratings_final.txt:2: label must be 0 or 1, got 2"],
        "bx",
        {"ratings_final.txt": "0\t0\t1\n0\t1\t2\n"},
    ),
    _case(
        "bx-negative",
        ["ratings_final.txt:3: negative id"],
        "bx",
        {"ratings_final.txt": "0\t0\t1\n\n-4\t1\t1\n"},
    ),
    _case(
        "bx-no-positives",
        ["ratings_final.txt: no interactions (no row with label 1)"],
        "bx",
        {"ratings_final.txt": "0\t0\t0\n"},
    ),
    _case(
        "bx-item-unmapped",
        ["ratings_final.txt:2: item 9 has no line in"],
        "bx",
        {"ratings_final.txt": "0\t0\t1\n0\t9\t1\n"},
    ),
    _case(
        "bx-relation-1e8",
        ["kg_final.txt:2: relation id 100000000 is too large"],
        "bx",
        {"kg_final.txt": "2\t0\t5\n0\t100000000\t5\n"},
    ),
    _case(
        "bx-map-entity-int64",
        ["item_index2entity_id_rehashed.txt:2: entity id", "out of range"],
        "bx",
        {"item_index2entity_id_rehashed.txt": f"isbnA\t2\nisbnB\t{BIG_INT}\nisbnC\t1\n"},
    ),
]


def _args(tmp_path, layout, files, argv, config):
    args = [
        "train",
        "--output",
        str(tmp_path / "run"),
        "--quiet",
        "--epochs",
        "1",
        "--set",
        f"synthetic={TINY}",
    ]
    if layout is not None:
        d = _make(tmp_path, layout, files)
        if "--data" not in argv:
            args += ["--data", str(d)]
    if config is not None:
        name, text = config
        p = tmp_path / name
        (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
        args += ["--config", str(p)]
    return args + [a.replace("@", f"{tmp_path}/") if a.startswith("@") else a for a in argv]


def _check(rc, err, parts):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("slifmr: error: "), err
    for part in parts:
        assert part in lines[-1], f"{part!r} not in {lines[-1]!r}"


@pytest.mark.parametrize("layout, files, argv, config, parts", CASES)
def test_bad_input_is_rejected(tmp_path, capsys, layout, files, argv, config, parts):
    rc = main(_args(tmp_path, layout, files, argv, config))
    _check(rc, capsys.readouterr().err, parts)
    assert not (tmp_path / "run" / "metrics.json").exists()


# a handful through the real process entry: exit status and stderr as a shell sees them
SUBPROCESS = [
    "set-lr-nan",
    "set-backend-bogus",
    "yaml-lr-word",
    "kgat-empty-train",
    "kgat-kg-entity-3e9",
    "npy-header-lies",
    "kgat-id-beyond-int64",
]


@pytest.mark.parametrize("layout, files, argv, config, parts", [c for c in CASES if c.id in SUBPROCESS])
def test_bad_input_python_dash_m(tmp_path, layout, files, argv, config, parts):
    r = subprocess.run(
        [sys.executable, "-m", "slifmr"] + _args(tmp_path, layout, files, argv, config),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    _check(r.returncode, r.stderr, parts)


# ---- evaluate / recommend read the run's config.json back: a damaged one is a config error
@pytest.mark.parametrize(
    "text, parts",
    [
        ("{not json", ["config.json: not a readable run configuration"]),
        (
            '{"config": {"lr": 0.1, "bogus": 1}, "data": null}',
            ["config.json: unknown configuration key 'bogus'"],
        ),
        ('{"config": {"lr": "nan"}, "data": null}', ["config.json: config key 'lr'", "got nan"]),
        ("[1, 2]", ["config.json: expected a JSON object with a 'config' mapping"]),
    ],
    ids=["not-json", "unknown-key", "bad-value", "not-object"],
)
@pytest.mark.parametrize(
    "command", [["evaluate"], ["recommend", "--users", "0"]], ids=["evaluate", "recommend"]
)
def test_damaged_run_config(tmp_path, capsys, text, parts, command):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    (run / "best.pt").write_bytes(b"")
    rc = main(command + ["--output", str(run)])
    _check(rc, capsys.readouterr().err, parts)
