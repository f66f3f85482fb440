"""Inputs of the hostile corpus that cannot be plain text: data files, and sweep files whose
bytes are the problem. ``make: [NAME, ...]`` in ``expected.yaml`` runs ``NAME(folder, sweep)``
before the case: ``folder`` is the case's own folder (``{tmp}`` in its YAML), ``sweep`` the
case's YAML file there."""

from __future__ import annotations

import io
import sqlite3
import zipfile
from pathlib import Path

import numpy as np


def _arrays(n: int = 120, features: int = 8, classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(n, features)).astype(np.float32),
        "y": np.arange(n) % classes,
        "x_test": rng.normal(size=(30, features)).astype(np.float32),
        "y_test": np.arange(30) % classes,
    }


def _save(folder: Path, **changes: np.ndarray | None) -> None:
    arrays = _arrays() | changes
    np.savez(folder / "data.npz", **{k: v for k, v in arrays.items() if v is not None})


def nan_inputs(folder: Path, sweep: Path) -> None:
    x = _arrays()["x"]
    x[17, 3] = np.nan
    _save(folder, x=x)


def inf_test_inputs(folder: Path, sweep: Path) -> None:
    x = _arrays()["x_test"]
    x[4, 0] = -np.inf
    _save(folder, x_test=x)


def float64_overflow(folder: Path, sweep: Path) -> None:
    x = _arrays()["x"].astype(np.float64)
    x[2, 2] = 1e300  # finite in float64, inf once the loader makes it float32
    _save(folder, x=x)


def huge_label(folder: Path, sweep: Path) -> None:
    y = _arrays()["y"]
    y[5] = 2_000_000_000
    _save(folder, y=y)


def unsigned_huge_label(folder: Path, sweep: Path) -> None:
    y = _arrays()["y"].astype(np.uint64)
    y[9] = np.uint64(2**63 + 5)  # wraps to a negative int64
    _save(folder, y=y)


def negative_label(folder: Path, sweep: Path) -> None:
    y = _arrays()["y_test"]
    y[3] = -1
    _save(folder, y_test=y)


def unseen_test_label(folder: Path, sweep: Path) -> None:
    y = _arrays()["y_test"]
    y[7] = 57
    _save(folder, y_test=y)


def unseen_clean_label(folder: Path, sweep: Path) -> None:
    rng = np.random.default_rng(1)
    _save(
        folder,
        x_clean=rng.normal(size=(20, 8)).astype(np.float32),
        y_clean=np.full(20, 9),
    )


def empty_features(folder: Path, sweep: Path) -> None:
    _save(folder, x=np.zeros((120, 0), np.float32), x_test=np.zeros((30, 0), np.float32))


def missing_array(folder: Path, sweep: Path) -> None:
    _save(folder, y_test=None)


def float_labels(folder: Path, sweep: Path) -> None:
    _save(folder, y=_arrays()["y"].astype(np.float64))


def length_mismatch(folder: Path, sweep: Path) -> None:
    _save(folder, y=_arrays()["y"][:100])


def object_array(folder: Path, sweep: Path) -> None:
    arrays = _arrays()
    arrays["x"] = np.array([{"a": 1}] * 120, dtype=object)
    np.savez(folder / "data.npz", **arrays)  # reading it would need pickle


def text_as_npz(folder: Path, sweep: Path) -> None:
    (folder / "data.npz").write_text("x,y\n1,2\n")


def truncated_npz(folder: Path, sweep: Path) -> None:
    _save(folder)
    data = (folder / "data.npz").read_bytes()
    (folder / "data.npz").write_bytes(data[: len(data) // 2])


def huge_npz_header(folder: Path, sweep: Path) -> None:
    """An archive whose ``x`` claims 10**12 x 40 float64 (320 TB) in a few bytes: refused from
    the header, before a byte of it is read."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 40)}
    )
    with zipfile.ZipFile(folder / "data.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue())  # the header writer adds the magic
        for key, value in _arrays().items():
            if key != "x":
                buffer = io.BytesIO()
                np.save(buffer, value)
                archive.writestr(f"{key}.npy", buffer.getvalue())


def data_folder(folder: Path, sweep: Path) -> None:
    (folder / "data.npz").mkdir()


def good_data(folder: Path, sweep: Path) -> None:
    _save(folder)


def workdir_file(folder: Path, sweep: Path) -> None:
    (folder / "work").write_text("a file where the work directory should be\n")


def text_store(folder: Path, sweep: Path) -> None:
    (folder / "store.db").write_text("not a database\n")


def damaged_store(folder: Path, sweep: Path) -> None:
    path = folder / "store.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE runs (id TEXT, config TEXT)")
    connection.executemany(
        "INSERT INTO runs VALUES (?, ?)", [(str(i), "x" * 200) for i in range(500)]
    )
    connection.commit()
    connection.close()
    data = bytearray(path.read_bytes())
    data[4096 : 4096 * 3] = b"\xa5" * 8192  # the table's pages, header intact
    path.write_bytes(bytes(data))


def tracking_file(folder: Path, sweep: Path) -> None:
    (folder / "mlruns").write_text("a file where MLflow's folder should be\n")


def latin1(folder: Path, sweep: Path) -> None:
    sweep.write_bytes(sweep.read_bytes().replace(b"CAFE", "café".encode("latin-1")))


def utf16(folder: Path, sweep: Path) -> None:
    sweep.write_bytes(sweep.read_text().encode("utf-16"))


def nul_in_text(folder: Path, sweep: Path) -> None:
    sweep.write_bytes(sweep.read_bytes().replace(b"NUL", b"\x00"))


def escape_in_text(folder: Path, sweep: Path) -> None:
    sweep.write_bytes(sweep.read_bytes().replace(b"ESC", b"\x1b[31m"))


def oversized(folder: Path, sweep: Path) -> None:
    padding = "".join(f"# {'x' * 90}\n" for _ in range(12_000))  # 1.1 MB of comments
    sweep.write_text(sweep.read_text() + padding)


def deep_nesting(folder: Path, sweep: Path) -> None:
    sweep.write_text(sweep.read_text() + "x: " + "[" * 50_000 + "]" * 50_000 + "\n")


def deep_mapping(folder: Path, sweep: Path) -> None:
    text = "".join("  " * i + f"k{i}:\n" for i in range(200))
    sweep.write_text(sweep.read_text() + text + "  " * 200 + "v: 1\n")


def alias_chain(folder: Path, sweep: Path) -> None:
    """Depth through aliases: each anchor nests the previous one once."""
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 60)]
    sweep.write_text(sweep.read_text() + "\n".join(lines) + "\n")
