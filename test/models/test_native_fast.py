"""The compiled fast path of the native backend against its PyTorch reference, and its fallback.

The parity tests need the extension (built on first use, cached by torch); they are skipped,
with the reason, where it cannot be built. The fallback test hides the C++ compiler and runs
in a fresh process with an empty extension cache, so it checks what a machine without a
compiler gets: one log line, then the reference's results.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from relkd_core.models import StudentConfig, build_student, inference, voxelize_batch
from relkd_core.models.batch import _fast_voxels
from relkd_core.models.sparse import build_geometry, native_fast
from relkd_core.models.sparse.native import (
    NativeGeometry,
    coarser_level,
    pairs_from_table,
    subm_forward,
    submanifold_pairs,
)

ROOT = Path(__file__).resolve().parents[2]
ConfigFactory = Callable[..., StudentConfig]
ScanFactory = Callable[..., torch.Tensor]


@pytest.fixture(scope="module")
def ops() -> object:
    built = native_fast.fast_ops()
    if built is None:
        pytest.skip("the compiled fast path cannot be built here (see the log)")
    return built


def cloud_coords(num: int = 600, seed: int = 0) -> torch.Tensor:
    """(V, 4) int64 unique cells of two clustered scans: sparse, with some dense blobs."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.randint(-6, 6, (num, 3), generator=generator)
    cells[: num // 2] //= 2  # a denser half, so voxels have up to 27 neighbours
    batch = torch.randint(0, 2, (num, 1), generator=generator)
    return torch.unique(torch.cat([batch, cells], dim=1), dim=0)


def test_neighbor_table_gives_the_reference_kernel_map(ops: object) -> None:
    geometry = NativeGeometry(cloud_coords(), 3)
    for level in range(3):
        for kernel_size in (3, 5):
            table = geometry.neighbor_table(level, kernel_size, ops)
            data = geometry._level(level)
            reference = submanifold_pairs(data.keys, *native_sort(data.keys), geometry._sizes,
                                          kernel_size)
            for k, (fast, ref) in enumerate(zip(pairs_from_table(table), reference,
                                                strict=True)):
                if ref is None:
                    assert fast is None and k == kernel_size**3 // 2
                    continue
                assert fast is not None
                assert pair_set(fast) == pair_set(ref)


def pair_set(pairs: tuple[torch.Tensor, torch.Tensor]) -> set[tuple[int, int]]:
    return set(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))


def native_sort(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ordered, order = torch.sort(keys)
    return ordered, order


@pytest.mark.parametrize(("c_in", "c_out"), [(1, 8), (3, 5), (16, 16), (12, 24), (16, 32),
                                             (70, 40), (33, 48), (9, 56), (70, 64), (24, 104)])
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_subm_conv_matches_the_reference(ops: object, c_in: int, c_out: int,
                                              threads: int) -> None:
    # Widths cover every column block (1-8 vectors; 13 vectors in blocks of 5, 4 and 4; a
    # scalar tail) and an input-channel split (70 > 64 at 8 vectors); two threads split the
    # tiles.
    geometry = NativeGeometry(cloud_coords(), 2)
    features = torch.randn(geometry.num_voxels(0), c_in)
    weight = torch.randn(27, c_in, c_out)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = native_fast.subm_conv(ops, features, weight, geometry.neighbor_table(0, 3, ops))
    finally:
        torch.set_num_threads(before)
    reference = subm_forward(features, weight, geometry._subm_map(0, 3))
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-5)


def test_fast_subm_conv_of_a_5_cube_kernel_matches_the_reference(ops: object) -> None:
    # 125 offsets: the most a tile's masks hold.
    geometry = NativeGeometry(cloud_coords(), 1)
    features = torch.randn(geometry.num_voxels(0), 6)
    weight = torch.randn(125, 6, 16)
    fast = native_fast.subm_conv(ops, features, weight, geometry.neighbor_table(0, 5, ops))
    reference = subm_forward(features, weight, geometry._subm_map(0, 5))
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("offsets", [8, 150])
def test_fast_conv_over_any_table_sums_each_rows_neighbours(ops: object, offsets: int) -> None:
    # A random table (130 rows: two full tiles and a partial one), with more offsets than a
    # tile's masks hold in the second case, against the sum written out.
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(90, 5, generator=generator)
    weight = torch.randn(offsets, 5, 24, generator=generator)
    table = torch.randint(-90, 90, (130, offsets), generator=generator).clamp(min=-1)
    table = table.to(torch.int32)
    bias = torch.randn(24, generator=generator)
    fast = native_fast.subm_conv(ops, features, weight, table, bias=bias, relu=True)
    present = (table >= 0).unsqueeze(-1)
    gathered = torch.where(present, features[table.long().clamp(min=0)], 0.0)
    expected = torch.einsum("okc,kcd->od", gathered, weight).add(bias).relu()
    torch.testing.assert_close(fast, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_fast_subm_conv_gradients_match_the_reference(ops: object, kernel_size: int) -> None:
    coords = cloud_coords(300)
    fast_geometry = build_geometry("native", coords, 2)
    reference_geometry = build_geometry("native-ref", coords, 2)
    results = []
    for geometry in (fast_geometry, reference_geometry):
        torch.manual_seed(1)
        features = torch.randn(geometry.num_voxels(1), 6, dtype=torch.float64,
                               requires_grad=True)
        weight = torch.randn(kernel_size**3, 6, 10, dtype=torch.float64, requires_grad=True)
        out = geometry.subm_conv(1, features, weight)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum(
            ).backward()
        assert features.grad is not None and weight.grad is not None
        results.append((out, features.grad, weight.grad))
    assert fast_geometry._tables and not reference_geometry._tables
    for fast, reference in zip(*results, strict=True):
        torch.testing.assert_close(fast, reference, atol=1e-10, rtol=1e-10)


def test_neighbor_table_of_unsorted_keys_matches_the_reference(ops: object) -> None:
    # Sorted keys (every level the backend builds) take the merge walk; shuffled ones the hash.
    coords = cloud_coords()
    shuffled = coords[torch.randperm(coords.shape[0], generator=torch.Generator().manual_seed(1))]
    for rows in (coords, shuffled):
        geometry = NativeGeometry(rows, 1)
        data = geometry._level(0)
        assert bool((data.keys[1:] > data.keys[:-1]).all()) == (rows is coords)
        table = geometry.neighbor_table(0, 3, ops)
        reference = submanifold_pairs(data.keys, *native_sort(data.keys), geometry._sizes, 3)
        for fast, ref in zip(pairs_from_table(table), reference, strict=True):
            assert (fast is None) == (ref is None)
            if fast is not None and ref is not None:
                assert pair_set(fast) == pair_set(ref)


@pytest.mark.parametrize("input_features", ["xyzi", "intensity", "ones"])
def test_fast_voxelization_equals_the_reference_bit_for_bit(
        ops: object, make_config: ConfigFactory, make_scan: ScanFactory,
        input_features: str) -> None:
    # Same cells in the same order, same point-to-voxel map, same float32 means: the compiled
    # voxelizer changes no label. Two scans, so the batch column and offsets are covered too.
    config = make_config(input_features=input_features)
    scans = [make_scan(3000, seed=1), make_scan(2000, seed=2)]
    fast = voxelize_batch(scans, dataclasses.replace(config, backend="native"))
    reference = voxelize_batch(scans, dataclasses.replace(config, backend="native-ref"))
    assert fast.num_voxels < fast.num_points
    for name in ("coords", "features", "point_to_voxel", "point_offsets", "voxel_offsets"):
        assert torch.equal(getattr(fast, name), getattr(reference, name)), name
    assert _fast_voxels(scans[0], dataclasses.replace(config, backend="native")) is not None
    assert _fast_voxels(scans[0], dataclasses.replace(config, backend="native-ref")) is None
    assert _fast_voxels(scans[0], dataclasses.replace(config, backend="native",
                                                      voxelization="cylindrical")) is None


def test_fast_voxelization_of_a_wide_span_equals_the_reference(make_config: ConfigFactory,
                                                               ops: object) -> None:
    # ±2 km at 1 cm: keys of about 57 bits, so the key sort takes all of its radix passes.
    generator = torch.Generator().manual_seed(4)
    scan = torch.cat([torch.rand(4000, 3, generator=generator) * 4000 - 2000,
                      torch.rand(4000, 1, generator=generator)], dim=1)
    scan[2000:2100] = scan[:100]  # some shared voxels
    config = make_config(voxel_size_m=0.01, input_features="xyzi")
    fast = voxelize_batch([scan], dataclasses.replace(config, backend="native"))
    reference = voxelize_batch([scan], dataclasses.replace(config, backend="native-ref"))
    assert fast.num_voxels == 3900
    for name in ("coords", "features", "point_to_voxel"):
        assert torch.equal(getattr(fast, name), getattr(reference, name)), name


def test_fast_voxelization_leaves_what_it_cannot_pack_to_the_reference(
        ops: object, make_config: ConfigFactory) -> None:
    # Cells spanning more than int64 keys hold: None here, the reference's error for the user.
    scan = torch.tensor([[-3e38, 0.0, 0.0, 1.0], [3e38, 3e38, 3e38, 1.0]])
    assert native_fast.voxelize(ops, scan, 1e-3, "xyzi") is None
    with pytest.raises(ValueError, match="too large to pack"):
        voxelize_batch([scan], make_config(voxel_size_m=1e-3))


def test_neighbor_table_of_offsets_without_mirrors_is_looked_up_whole(ops: object) -> None:
    # Offsets that are not a centred kernel (no -d for every d) cannot fill one half of the
    # table from the other: every entry is looked up, and matches a brute-force search.
    keys = torch.unique(torch.randint(0, 400, (150,), generator=torch.Generator().manual_seed(3)))
    deltas = torch.tensor([0, 1, 7, -3, 20], dtype=torch.int64)
    table = native_fast.neighbor_table(ops, keys, deltas)
    row_of = {int(key): row for row, key in enumerate(keys.tolist())}
    expected = [[row_of.get(int(key) + int(delta), -1) for delta in deltas] for key in keys]
    assert table.tolist() == expected


def test_fast_coarsening_equals_the_reference_level_by_level(ops: object) -> None:
    # Same rows in the same order, so every later map and output matches the reference's.
    geometry = build_geometry("native-ref", cloud_coords(900, seed=5), 4)
    assert isinstance(geometry, NativeGeometry)
    for level in range(3):
        fine = geometry._level(level).coords
        fast = native_fast.coarsen(ops, fine, geometry._sizes, 2)
        reference = coarser_level(fine, geometry._sizes)
        assert fast[2] == reference[2] and sum(fast[2]) == fine.shape[0]
        for got, expected in zip(fast[:2] + fast[3:], reference[:2] + reference[3:],
                                 strict=True):
            assert torch.equal(got, expected)
        assert fast[3].shape[0] < fine.shape[0]


def test_compiled_stride_tables_equal_the_reference(ops: object) -> None:
    coords = cloud_coords(900, seed=6)
    fast, reference = NativeGeometry(coords, 4), NativeGeometry(coords, 4, fast=False)
    for level in range(3):
        got, expected = fast.stride_tables(level), reference.stride_tables(level)
        for table, other in zip(got, expected, strict=True):
            assert table.dtype == torch.int32 and torch.equal(table, other)
        down, up = got
        assert down.shape == (fast.num_voxels(level + 1), 8)
        # Every fine voxel has exactly one parent; each child entry points back at its parent.
        assert torch.equal((up >= 0).sum(dim=1), torch.ones(fast.num_voxels(level),
                                                             dtype=torch.int64))
        rows, offsets = (down >= 0).nonzero(as_tuple=True)
        assert torch.equal(up[down[rows, offsets].long(), offsets], rows.int())


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("rows", "width", "count"), [(1000, 24, 8), (13, 5, 1), (37, 48, 17),
                                                      (0, 8, 3)])
def test_best_match_equals_the_folded_head_reference(ops: object, normalize: bool, rows: int,
                                                     width: int, count: int) -> None:
    generator = torch.Generator().manual_seed(rows + width)
    hidden = torch.randn(rows, width, generator=generator)
    text = torch.nn.functional.normalize(torch.randn(count, 40, generator=generator), dim=1)
    terms = inference._fold_head(torch.randn(width, 16, generator=generator),
                                 torch.randn(16, generator=generator),
                                 torch.randn(40, 16, generator=generator),
                                 torch.randn(40, generator=generator), text)
    index, score = native_fast.best_match(ops, hidden, terms, normalize)
    cosine = inference._head_cosines(hidden, terms, normalize)
    assert index.shape == score.shape == (rows,)
    assert torch.equal(index, cosine.argmax(dim=1))
    torch.testing.assert_close(score, cosine.max(dim=1).values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_stride_convs_match_the_reference_with_gradients(ops: object, up: bool,
                                                              threads: int) -> None:
    # The stride-2 convolution and its transpose run the compiled convolution over the
    # tables of stride_tables; the input gradient is the other direction's table.
    coords = cloud_coords(500)
    results = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for backend in ("native", "native-ref"):
            geometry = build_geometry(backend, coords, 3)
            torch.manual_seed(2)
            rows = geometry.num_voxels(2 if up else 1)
            features = torch.randn(rows, 12, dtype=torch.float64, requires_grad=True)
            weight = torch.randn(8, 12, 20, dtype=torch.float64, requires_grad=True)
            conv = geometry.up_conv if up else geometry.down_conv
            out = conv(1, features, weight)
            (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum(
                ).backward()
            assert features.grad is not None and weight.grad is not None
            results.append((out, features.grad, weight.grad))
            assert bool(geometry._stride_tables) == (backend == "native")
    finally:
        torch.set_num_threads(before)
    for fast, reference in zip(*results, strict=True):
        torch.testing.assert_close(fast, reference, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("up", [False, True])
def test_stride_conv_epilogue_adds_the_bias_then_relu(ops: object, up: bool) -> None:
    coords = cloud_coords(500)
    fast, reference = (build_geometry(backend, coords, 2) for backend in ("native", "native-ref"))
    torch.manual_seed(4)
    features = torch.randn(fast.num_voxels(1 if up else 0), 16)
    weight, bias = torch.randn(8, 16, 24), torch.randn(24)
    assert isinstance(fast, NativeGeometry) and isinstance(reference, NativeGeometry)
    out = fast.stride_conv_epilogue(0, features, weight, bias, up=up)
    conv = reference.up_conv if up else reference.down_conv
    expected = (conv(0, features, weight) + bias).relu()
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-5)
    assert (out == 0).any() and (out > 0).any()
    torch.testing.assert_close(reference.stride_conv_epilogue(0, features, weight, bias, up=up),
                               expected)


def test_minkunet_native_matches_native_ref_forward_and_gradients(
        ops: object, make_config: ConfigFactory, make_scan: ScanFactory) -> None:
    config = make_config(width_multiplier=0.25, stem_kernel_size=5)
    scan = make_scan(1500)
    outputs = []
    reference_state = None
    for backend in ("native", "native-ref"):
        backend_config = dataclasses.replace(config, backend=backend)
        model = build_student(backend_config).double().train()
        if reference_state is None:
            reference_state = model.state_dict()
        model.load_state_dict(reference_state)
        batch = voxelize_batch([scan], backend_config)
        batch = dataclasses.replace(batch, features=batch.features.double())
        out = model(batch)
        out.pow(3).sum().backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        outputs.append((out.detach(), grads))
    (fast_out, fast_grads), (ref_out, ref_grads) = outputs
    torch.testing.assert_close(fast_out, ref_out, atol=1e-10, rtol=1e-10)
    assert fast_grads.keys() == ref_grads.keys()
    for name, grad in fast_grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-9, rtol=1e-9, msg=name)


def test_other_dtypes_take_the_reference_path(ops: object) -> None:
    geometry = NativeGeometry(cloud_coords(), 2)
    features = torch.randn(geometry.num_voxels(0), 4).bfloat16()
    weight = torch.randn(27, 4, 4).bfloat16()
    out = geometry.subm_conv(0, features, weight)
    assert out.dtype == torch.bfloat16 and not geometry._tables
    reference = subm_forward(features.float(), weight.float(), geometry._subm_map(0, 3))
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)


FALLBACK_SCRIPT = textwrap.dedent("""
    import logging, torch
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    from relkd_core.models.sparse import build_geometry, native_fast
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 5, 5, 5]])
    features = torch.randn(4, 3, dtype=torch.float64)
    weight = torch.randn(27, 3, 2, dtype=torch.float64)
    out = build_geometry("native", coords, 2).subm_conv(0, features, weight)
    again = build_geometry("native", coords, 2).subm_conv(0, features, weight)
    ref = build_geometry("native-ref", coords, 2).subm_conv(0, features, weight)
    assert native_fast.fast_ops() is None
    assert torch.equal(out, ref) and torch.equal(again, ref)
    print("fallback-ok")
""")


@pytest.mark.parametrize("compiler", ["absent", "failing"])
def test_without_a_working_compiler_native_logs_one_line_and_runs_the_reference(
        tmp_path: Path, compiler: str) -> None:
    # PATH keeps ninja (so the build is attempted) and either no C++ compiler or one that
    # always fails; the extension cache is empty, so nothing built earlier can be loaded.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ninja = shutil.which("ninja") or str(Path(sys.executable).parent / "ninja")
    if Path(ninja).exists():
        (bin_dir / "ninja").symlink_to(ninja)
    if compiler == "failing":
        fake = bin_dir / "c++"
        fake.write_text("#!/bin/sh\necho 'internal compiler error' >&2\nexit 1\n")
        fake.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in ("CXX", "CC")}
    env.update(PATH=str(bin_dir), TORCH_EXTENSIONS_DIR=str(tmp_path / "cache"),
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("fallback-ok")
    warnings = [line for line in done.stderr.splitlines() if "compiled fast path" in line]
    assert len(warnings) == 1, done.stderr[-2000:]
    assert warnings[0].startswith("WARNING relkd_core.models.sparse.native_fast: native sparse "
                                  "backend: compiled fast path unavailable")
    assert "running the PyTorch reference" in warnings[0]
    assert "!! WARNING" not in done.stderr  # torch's own compiler warning is held back


@pytest.mark.parametrize("backend", ["native", "native-ref"])
def test_eval_forward_with_folded_batch_norms_matches_the_modules(
        backend: str, make_config: ConfigFactory, make_scan: ScanFactory) -> None:
    config = make_config(backend=backend, width_multiplier=0.25)
    model = build_student(config).eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                assert module.running_mean is not None and module.running_var is not None
                count = module.num_features
                module.running_mean.copy_(torch.randn(count, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(count, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(count, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(count, generator=generator) * 0.2)
    batch = voxelize_batch([make_scan(1500)], config)
    with torch.no_grad():
        folded = model.forward_voxels(batch)
        geometry = batch.cache[f"{backend}:5"]
        modules = torch.nn.functional.normalize(model.run(batch.features, geometry), dim=1)
        assert model._folded_cache is not None
        # A changed statistic is seen at the next call (the cache follows the versions).
        model.bn0.running_mean.add_(1.0)
        changed = model.forward_voxels(batch)
        modules_changed = torch.nn.functional.normalize(model.run(batch.features, geometry),
                                                        dim=1)
        # So is a parameter replaced by a new tensor (a fresh version counter).
        conv = model.block1[0].conv1
        conv.weight = torch.nn.Parameter(conv.weight * 2.0)
        replaced = model.forward_voxels(batch)
        modules_replaced = torch.nn.functional.normalize(model.run(batch.features, geometry),
                                                         dim=1)
    torch.testing.assert_close(folded, modules, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(changed, modules_changed, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(replaced, modules_replaced, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(changed, folded)
    assert not torch.allclose(replaced, changed)


@pytest.mark.parametrize("backend", ["native", "native-ref"])
def test_autocast_training_step_runs_in_the_lower_precision(
        backend: str, make_config: ConfigFactory, make_scan: ScanFactory) -> None:
    # CPU autocast to bfloat16 stands in for CUDA AMP (float16): the sparse convolutions take
    # autocast's dtype for features and weight, and the weights' gradients stay float32.
    torch.manual_seed(0)  # the initial weights; unseeded, they followed the tests run before
    config = make_config(backend=backend)
    model = build_student(config).train()
    batch = voxelize_batch([make_scan(1500)], config)
    reference = model(batch).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    out.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32
               and bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    # Bounds that held for each of 40 seeds (mean ≤ 0.019, 99th percentile ≤ 0.11). The
    # largest difference is no measure: the output is L2-normalised, and a voxel whose output
    # is near zero before that can turn far under bfloat16 rounding (up to 0.79 seen).
    difference = (out.float() - reference).abs().flatten()
    assert 0.0 < float(difference.mean()) < 0.03
    assert float(difference.quantile(0.99)) < 0.15


def test_wide_layers_take_the_reference_path(ops: object) -> None:
    geometry = NativeGeometry(cloud_coords(200), 2)
    features = torch.randn(geometry.num_voxels(0), 192)
    out = geometry.subm_conv(0, features, torch.randn(27, 192, 160))
    assert out.shape == (geometry.num_voxels(0), 160) and not geometry._tables
    geometry.subm_conv(0, features, torch.randn(27, 192, 128))
    assert list(geometry._tables) == [(0, 3)]


def test_build_command_reports_availability(tmp_path: Path) -> None:
    """``python -m relkd_core.models.sparse.build`` (run by make install): 0 and one line when
    the fast path is there (cached by this suite's own builds), 1 with the reason otherwise."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ready = subprocess.run([sys.executable, "-m", "relkd_core.models.sparse.build"], env=env,
                           capture_output=True, text=True, timeout=600, check=False)
    if native_fast.fast_ops() is None:
        assert ready.returncode == 1 and "unavailable" in ready.stderr
    else:
        assert ready.returncode == 0, ready.stderr[-2000:]
        assert ready.stdout.startswith("native sparse backend: compiled fast path ready (")
    off = subprocess.run([sys.executable, "-m", "relkd_core.models.sparse.build"],
                         env={**env, "RELKD_NATIVE_FAST": "0"}, capture_output=True, text=True,
                         timeout=120, check=False)
    assert off.returncode == 1
    assert off.stdout.strip() == ("native sparse backend: compiled fast path turned off "
                                  "(RELKD_NATIVE_FAST=0)")
