"""The pure merge functions: mergekit's SLERP against a numpy re-implementation of its published
formula, the geodesic mode's norms, the Karcher mean against mergekit's tensor-space iteration,
per-path rules and depth schedules, exact end points, jit and sharded inputs, clear errors."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from compass_jax import merge, sharding, tree
from compass_jax.merge import MergeError, RulesError, load_rules, stream
from compass_jax.merge import leaf as leaf_steps

# ------------------------------------------------------------------ oracles (numpy, from papers)


def _normalize(v, eps):
    n = np.linalg.norm(v)
    return v / n if n > eps else v


def mergekit_slerp(t, v0, v1, dot_threshold=0.9995, eps=1e-8):
    """mergekit/merge_methods/slerp.py's published formula, re-written in numpy."""
    v0_copy, v1_copy = np.copy(v0), np.copy(v1)
    v0, v1 = _normalize(v0, eps), _normalize(v1, eps)
    dot = np.sum(v0 * v1)
    if np.abs(dot) > dot_threshold:
        return (1 - t) * v0_copy + t * v1_copy
    theta_0 = np.arccos(dot)
    sin_theta_0 = np.sin(theta_0)
    theta_t = theta_0 * t
    s0 = np.sin(theta_0 - theta_t) / sin_theta_0
    s1 = np.sin(theta_t) / sin_theta_0
    return s0 * v0_copy + s1 * v1_copy


def mergekit_karcher(tensors, alphas, max_iter=10, tol=1e-5):
    """mergekit/merge_methods/karcher.py's iteration on whole tensors, in float64."""
    tensors = [np.asarray(x, np.float64) for x in tensors]
    norms = [float(np.linalg.norm(x)) for x in tensors]
    units = [x / n if n > 0 else np.zeros_like(x) for x, n in zip(tensors, norms, strict=True)]
    valid = [i for i, n in enumerate(norms) if n > tol]
    alpha = np.array([alphas[i] for i in valid]) / sum(alphas[i] for i in valid)
    units = [units[i] for i in valid]
    mean = sum(a * u for a, u in zip(alpha, units, strict=True))
    mean = mean / np.linalg.norm(mean)
    for _ in range(max_iter):
        tangent = np.zeros_like(mean)
        for a, u in zip(alpha, units, strict=True):
            dot = np.clip(np.sum(mean * u), -1.0, 1.0)
            theta = np.arccos(dot)
            if theta < tol:
                continue
            tangent += a * (theta / np.sin(theta)) * (u - dot * mean)
        size = np.linalg.norm(tangent)
        if size < tol:
            break
        mean = np.cos(size) * mean + np.sin(size) * tangent / size
        mean = mean / np.linalg.norm(mean)
    return sum(a * n for a, n in zip(alphas, norms, strict=True)) * mean


# ------------------------------------------------------------------ fixtures


def _tree(seed, layers=4, dtype=np.float32):
    rng = np.random.default_rng(seed)
    r = lambda *s: (rng.standard_normal(s) * 0.1 + (1.0 if len(s) == 1 else 0.0)).astype(dtype)
    params = {
        "embeddings": {"token": {"embedding": r(11, 6)}},
        "layers": {
            str(i): {
                "attn": {"q_proj": {"kernel": r(6, 6), "bias": r(6)}},
                "mlp": {"up_proj": {"kernel": r(6, 10)}},
            }
            for i in range(layers)
        },
        "final_norm": {"scale": r(6)},
    }
    return params


def _flat(params):
    return {k: np.asarray(v) for k, v in tree.flatten(params).items()}


# ------------------------------------------------------------------ SLERP


@pytest.mark.parametrize("t", [0.0, 0.13, 0.5, 0.77, 1.0])
def test_mergekit_mode_matches_published_formula(t):
    a, b = _flat(_tree(0)), _flat(_tree(1))
    out, report = merge.merge("slerp", [_tree(0), _tree(1)], t=t, with_report=True)
    out = _flat(out)
    for path in a:
        # every leaf, 1-D ones included, by mergekit's slerp (the mergekit-mode default)
        expected = mergekit_slerp(t, a[path], b[path])
        np.testing.assert_allclose(out[path], expected, rtol=2e-6, atol=2e-7, err_msg=path)
    row = next(r for r in report if r["path"] == "layers.1.mlp.up_proj.kernel")
    x, y = a[row["path"]].ravel().astype(np.float64), b[row["path"]].ravel().astype(np.float64)
    cos = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
    assert row["angle_deg"] == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-3)
    assert row["norms_in"] == pytest.approx([np.linalg.norm(x), np.linalg.norm(y)], rel=1e-5)
    assert row["norm_out"] == pytest.approx(np.linalg.norm(out[row["path"]]), rel=1e-5)
    assert row["op"] == "spherical" and row["t"] == pytest.approx(t) and row["rule"] is None
    json.dumps(report)  # plain JSON


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
@pytest.mark.parametrize("mode", ["mergekit", "geodesic"])
@pytest.mark.parametrize("method", ["slerp", "task_slerp", "lerp"])
def test_end_points_are_bitwise_in_every_method_and_dtype(dtype, mode, method):
    a, b, base = _tree(0, dtype=dtype), _tree(1, dtype=dtype), _tree(2, dtype=dtype)
    trees = [base, a, b] if method == "task_slerp" else [a, b]
    for t, want in ((0.0, a), (1.0, b)):
        got = _flat(merge.merge(method, trees, t=t, mode=mode))
        for path, leaf in _flat(want).items():
            assert got[path].dtype == leaf.dtype
            assert got[path].tobytes() == leaf.tobytes(), (t, path)


def test_colinear_inputs_fall_back_to_lerp():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 16)).astype(np.float32)
    noise = rng.standard_normal(a.shape).astype(np.float32)
    # exactly parallel (the spherical formula would divide 0 by 0), nearly parallel, and
    # nearly anti-parallel: |cos| is what counts
    for b in (3 * a, 3 * a + 1e-3 * noise, -3 * a + 1e-3 * noise):
        gram = [float(np.sum(x.astype(np.float64) * y)) for x, y in ((a, a), (b, b), (a, b))]
        s0, s1 = merge.slerp_coefficients(*gram, 0.3, "mergekit")
        assert (float(s0), float(s1)) == (np.float32(1 - np.float32(0.3)), np.float32(0.3))
        out, stats = merge.merge_two(jnp.asarray(a), jnp.asarray(b), 0.3)
        # XLA may fuse the multiply-add, so one rounding fewer than numpy: 1 ulp
        np.testing.assert_allclose(np.asarray(out), 0.7 * a + 0.3 * b, rtol=2.5e-7, atol=1e-7)
        assert float(stats["angle_deg"]) == pytest.approx(
            0.0 if b[0, 0] * a[0, 0] > 0 else 180, abs=0.2
        )
    # just below the threshold the spherical formula is used, and differs from lerp
    c = (a + 0.05 * np.linalg.norm(a) / 8 * rng.standard_normal(a.shape)).astype(np.float32)
    cos = np.sum(a * c) / np.linalg.norm(a) / np.linalg.norm(c)
    assert 0.99 < cos < 0.9995
    out = np.asarray(merge.merge_two(jnp.asarray(a), jnp.asarray(c), 0.3)[0])
    np.testing.assert_allclose(out, mergekit_slerp(0.3, a, c), rtol=1e-5, atol=1e-6)
    assert np.abs(out - (0.7 * a + 0.3 * c)).max() > 1e-4


@pytest.mark.parametrize("mode", ["mergekit", "geodesic"])
def test_slerp_is_symmetric(mode):
    a, b = _tree(0), _tree(1)
    for t in (0.2, 0.5, 0.9):
        x, y = _flat(merge.slerp(a, b, t, mode=mode)), _flat(merge.slerp(b, a, 1 - t, mode=mode))
        for path in x:
            np.testing.assert_allclose(x[path], y[path], rtol=1e-5, atol=1e-6, err_msg=path)


def test_geodesic_mode_keeps_unit_norms_and_interpolates_norms_linearly():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(500).astype(np.float32)
    a /= np.linalg.norm(a)
    far = rng.standard_normal(500).astype(np.float32)
    near = a + 1e-3 * far  # inside the colinear threshold
    for b in (far / np.linalg.norm(far), near / np.linalg.norm(near), -a + 0.3 * far):
        b = (b / np.linalg.norm(b)).astype(np.float32)
        for t in (0.1, 0.5, 0.8):
            out = merge.slerp({"w": a}, {"w": b}, t, mode="geodesic", rules=[("w", "spherical")])
            assert np.linalg.norm(out["w"]) == pytest.approx(1.0, abs=1e-5)
    # norms: linear in t; direction: on the great circle, at angle t * theta from a
    b = 4.0 * far / np.linalg.norm(far)
    spherical = [("w", "spherical")]  # a 1-D leaf would lerp by default
    out = np.asarray(merge.slerp({"w": a}, {"w": b}, 0.25, mode="geodesic", rules=spherical)["w"])
    theta = np.arccos(a @ b / 4.0)
    assert np.linalg.norm(out) == pytest.approx(0.75 * 1 + 0.25 * 4, rel=1e-5)
    assert np.arccos(out @ a / np.linalg.norm(out)) == pytest.approx(0.25 * theta, rel=1e-4)


# ------------------------------------------------------------------ Karcher and task vectors


def test_karcher_of_two_points_is_the_geodesic_slerp():
    a, b = _tree(0), _tree(1)
    every = [(".*", "spherical")]
    for w, t in (((1.0, 1.0), 0.5), ((0.7, 0.3), 0.3)):
        mean = _flat(merge.karcher_mean([a, b], w, rules=every))
        geo = _flat(merge.slerp(a, b, t, mode="geodesic", rules=every))
        for path in mean:
            np.testing.assert_allclose(mean[path], geo[path], rtol=1e-5, atol=1e-6, err_msg=path)


def test_karcher_of_several_points_matches_mergekit_iteration():
    trees = [_tree(s) for s in range(4)]
    weights = [0.4, 0.3, 0.2, 0.1]
    out = _flat(merge.karcher_mean(trees, weights))
    flats = [_flat(t) for t in trees]
    for path in out:
        xs = [f[path] for f in flats]  # every leaf, 1-D ones too (mergekit mode)
        expected = mergekit_karcher(xs, weights)
        # first-order optimality: the weighted tangent vectors at the mean cancel
        m = expected / np.linalg.norm(expected)
        log = 0
        for w, x in zip(weights, xs, strict=True):
            u = x / np.linalg.norm(x)
            theta = np.arccos(np.sum(m * u))
            log = log + w * theta / np.sin(theta) * (u - np.cos(theta) * m)
        assert np.linalg.norm(log) < 1e-5  # the iteration stops below tol
        np.testing.assert_allclose(out[path], expected, rtol=1e-5, atol=1e-6, err_msg=path)


def test_task_slerp_is_slerp_of_task_vectors_added_to_base():
    base, a, b = _flat(_tree(2)), _flat(_tree(0)), _flat(_tree(1))
    out, report = merge.merge("task_slerp", [_tree(2), _tree(0), _tree(1)], t=0.4, with_report=True)
    out = _flat(out)
    for path in out:  # every leaf, 1-D ones too (mergekit mode)
        expected = base[path] + mergekit_slerp(0.4, a[path] - base[path], b[path] - base[path])
        np.testing.assert_allclose(out[path], expected, rtol=1e-5, atol=1e-6, err_msg=path)
    row = report[0]
    da, db = (x[row["path"]] - base[row["path"]] for x in (a, b))
    cos = np.sum(da * db) / np.linalg.norm(da) / np.linalg.norm(db)
    assert row["angle_deg"] == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-3)


# ------------------------------------------------------------------ rules


def test_rules_first_match_depth_schedules_and_defaults():
    a, b = _tree(0, layers=4), _tree(1, layers=4)
    rules = [
        (r"layers\.0\.", "keep_a"),
        (r"attn\.q_proj\.kernel", [0.0, 0.5, 1.0, 0.5, 0.0]),
        (r"mlp", {"op": "lerp", "t": [0.0, 1.0]}),
        (r"embeddings", [0.2, 0.8]),
        (r"final_norm", [0.2, 0.8]),
        (r"layers\.3\.attn\.q_proj\.bias", "keep_b"),
    ]
    out, report = merge.merge("slerp", [a, b], t=0.5, rules=rules, with_report=True)
    rows = {r["path"]: r for r in report}
    fa, fb, out = _flat(a), _flat(b), _flat(out)
    # layer 0 is kept whole by the first rule, although later rules match it too
    for path in fa:
        if path.startswith("layers.0."):
            assert out[path].tobytes() == fa[path].tobytes() and rows[path]["op"] == "keep_a"
    # mergekit's interpolation of [0, .5, 1, .5, 0] at fractions 1/3, 2/3, 1: 2/3, 2/3, 0
    for i, t in ((1, 2 / 3), (2, 2 / 3), (3, 0.0)):
        path = f"layers.{i}.attn.q_proj.kernel"
        assert rows[path]["t"] == pytest.approx(t, abs=1e-6)
        expected = mergekit_slerp(np.float32(t), fa[path], fb[path])
        np.testing.assert_allclose(out[path], expected, rtol=1e-5, atol=1e-6)
    for i in (1, 2, 3):  # lerp with schedule [0, 1]: t = i / 3
        path = f"layers.{i}.mlp.up_proj.kernel"
        assert rows[path]["op"] == "lerp" and rows[path]["t"] == pytest.approx(i / 3, abs=1e-6)
        np.testing.assert_allclose(out[path], (1 - i / 3) * fa[path] + i / 3 * fb[path], 1e-6, 1e-8)
    # before the stack: the first value; after it: the last; in mergekit mode 1-D leaves slerp
    assert rows["embeddings.token.embedding"]["t"] == pytest.approx(0.2)
    assert rows["embeddings.token.embedding"]["op"] == "spherical"
    assert rows["final_norm.scale"]["t"] == pytest.approx(0.8)
    assert rows["final_norm.scale"]["op"] == "spherical"
    # a 1-D leaf no rule names: the default op at the call's t; a later rule never reached
    bias = "layers.1.attn.q_proj.bias"
    assert rows[bias]["op"] == "spherical" and rows[bias]["rule"] is None
    assert rows["layers.3.attn.q_proj.bias"]["op"] == "keep_b"
    expected = mergekit_slerp(np.float32(0.5), fa[bias], fb[bias])
    np.testing.assert_allclose(out[bias], expected, rtol=1e-5, atol=1e-6)
    # geodesic mode: 0/1-D leaves lerp by default (matrices stay spherical)
    _, report = merge.merge("slerp", [a, b], t=0.5, mode="geodesic", with_report=True)
    ops = {r["path"]: r["op"] for r in report}
    assert ops[bias] == ops["final_norm.scale"] == "lerp"
    assert ops["layers.1.attn.q_proj.kernel"] == "spherical"


def test_rule_errors_name_the_rule_and_file(tmp_path):
    with pytest.raises(RulesError, match=r"rule 1: unknown op 'slurp'"):
        merge.slerp(_tree(0), _tree(1), rules=[("a", 0.3), ("b", "slurp")])
    path = tmp_path / "rules.json"
    path.write_text('[["layers", 0.3], ["(unclosed", "lerp"]]')
    with pytest.raises(RulesError, match=r"rules\.json: rule 1: bad regex"):
        load_rules(path)
    path.write_text('[["layers", 0.3],\n ["x", ]]')
    with pytest.raises(RulesError, match=r"rules\.json: line 2: invalid JSON"):
        load_rules(path)
    with pytest.raises(MergeError, match="takes weights, not t"):
        merge.karcher_mean([_tree(0), _tree(1)], rules=[("layers", 0.3)])


def test_mismatched_trees_name_the_first_difference():
    a, b = _tree(0), _tree(1)
    del b["layers"]["2"]["mlp"]
    with pytest.raises(MergeError, match=r"^layers\.2\.mlp\.up_proj\.kernel: in a but not in b"):
        merge.slerp(a, b)
    b = _tree(1)
    b["layers"]["1"]["attn"]["q_proj"]["kernel"] = np.zeros((6, 7), np.float32)
    with pytest.raises(MergeError, match=r"layers\.1\.attn\.q_proj\.kernel: shape \(6, 7\) in b"):
        merge.slerp(a, b)
    b = _tree(1)
    b["final_norm"]["scale"] = b["final_norm"]["scale"].astype(ml_dtypes.bfloat16)
    with pytest.raises(MergeError, match=r"final_norm\.scale: dtype bfloat16 in trees\[2\]"):
        merge.karcher_mean([a, _tree(2), b])


# ------------------------------------------------------------------ jit and sharding


def test_jitted_and_sharded_inputs_give_the_eager_result():
    assert len(jax.devices()) == 8

    def small(seed):  # split columns, a split vector, and a replicated (indivisible) leaf
        r = np.random.default_rng(seed).standard_normal
        layer = lambda: {"big": r((16, 40), np.float32), "bias": r(40, np.float32)}
        return {"layers": {"0": layer(), "1": layer()}, "odd": r((9, 5), np.float32)}

    a, b, c = small(0), small(1), small(2)
    rules = [(r"layers\.1\.", [0.1, 0.9])]
    eager = {
        "slerp": _flat(merge.slerp(a, b, 0.3, rules=rules)),
        "karcher": _flat(merge.karcher_mean([a, b, c], [0.5, 0.3, 0.2])),
    }
    run = {
        "slerp": lambda x, y, z, t: merge.slerp(x, y, t, rules=rules),
        "karcher": lambda x, y, z, t: merge.karcher_mean([x, y, z], [0.5, 0.3, 0.2]),
    }
    mesh = sharding.make_mesh(data=1, fsdp=8)
    shardings = sharding.param_shardings(a, mesh, min_elements=1)
    sa, sb, sc = (jax.device_put(x, shardings) for x in (a, b, c))
    spec = tree.flatten(sa)["layers.0.big"].sharding.spec
    assert spec == PartitionSpec(None, "fsdp")  # really split, 5 columns per device
    for name, fn in run.items():
        # nothing is gathered: the inner products are all-reduces of partial sums
        hlo = jax.jit(fn).lower(sa, sb, sc, 0.3).compile().as_text()
        assert "all-reduce" in hlo and "all-gather" not in hlo and "all-to-all" not in hlo
        for label, out in (
            ("jit", jax.jit(fn)(sa, sb, sc, 0.3)),  # t traced
            ("eager sharded", fn(sa, sb, sc, 0.3)),
        ):
            flat = tree.flatten(out)
            for path, leaf in flat.items():
                np.testing.assert_allclose(
                    np.asarray(leaf), eager[name][path], rtol=2e-6, atol=2e-7,
                    err_msg=f"{name} {label} {path}",
                )  # fmt: skip
                want = tree.flatten(sa)[path].sharding
                assert leaf.sharding.is_equivalent_to(want, leaf.ndim), (name, label, path)


# ------------------------------------------------------------------ streaming, as the command does


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
@pytest.mark.parametrize(
    "kind,op", [("pair", "spherical"), ("pair", "lerp"), ("pair", "keep_b"),
                ("task", "spherical"), ("task", "lerp"), ("many", "spherical"),
                ("many", "lerp")],
)  # fmt: skip
def test_streamed_merge_is_the_in_memory_arithmetic(kind, op, dtype):
    rng = np.random.default_rng(7)
    count = 2 if kind == "pair" else 3 if kind == "task" else 4
    xs = [(rng.standard_normal((13, 11)) * 0.1).astype(dtype) for _ in range(count)]
    t, weights = (None, [0.4, 0.3, 0.2, 0.1]) if kind == "many" else (0.3, None)
    leaf_op = merge.LeafOp(kind, op, "geodesic" if kind == "task" else "mergekit")
    jxs = tuple(jnp.asarray(x) for x in xs)
    want, want_stats = merge.merge_leaf(leaf_op, jxs, t, weights)
    want = np.asarray(want)
    # chunks of 17 elements: 9 chunks, the last one short
    prepared = stream.prepare(leaf_op, xs, t=t, weights=weights, chunk=17)
    parts = []
    stats = stream.emit(prepared, stream.Sink(lambda c: parts.append(np.array(c))), dtype)
    assert len(parts) == 9 and parts[-1].size == 143 - 8 * 17
    got = np.concatenate(parts).reshape(13, 11)
    assert got.dtype == want.dtype
    # Given its coefficients, the streamed result is XLA's combine bit for bit (fused
    # multiply-adds included).
    same, _ = leaf_steps.combine(jxs, jnp.asarray(prepared.coeffs), t, leaf_op.ends)
    assert got.tobytes() == np.asarray(same).tobytes()
    # Coefficients come from the same jitted step; those that need no inner products (lerp,
    # keep) are the in-memory ones, so is the whole result, bit for bit.
    moments = leaf_steps.moments(kind, jxs)
    in_memory, _ = leaf_steps.coefficients(leaf_op, moments, t, weights)
    np.testing.assert_allclose(prepared.coeffs, in_memory, rtol=2e-6, atol=1e-7)
    if op != "spherical":
        assert got.tobytes() == want.tobytes()
    else:  # inner products summed in another order: the coefficients' rounding, nothing else
        x32 = [np.abs(x.astype(np.float32)) for x in xs]
        shifts = np.abs(prepared.coeffs - np.asarray(in_memory))
        moved = sum(float(d) * x for d, x in zip(shifts, x32, strict=True))
        terms = sum(abs(float(c)) * x for c, x in zip(prepared.coeffs, x32, strict=True))
        ulp = np.finfo(np.float32 if dtype == np.float32 else ml_dtypes.bfloat16).eps
        error = np.abs(got.astype(np.float32) - want.astype(np.float32))
        assert np.all(error <= moved + 2 * ulp * terms)
    for key in ("angle_deg", "norms_in", "norm_out"):
        np.testing.assert_allclose(stats[key], want_stats[key], rtol=1e-5, err_msg=key)


def test_streamed_bfloat16_rounding_is_ml_dtypes():
    rng = np.random.default_rng(9)
    bits = np.concatenate([rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32),
                           np.array([0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x00000001, 0x807FFFFF,
                                     0x3F80FFFF, 0xC0008000, 0x00008000], np.uint32)])  # fmt: skip
    x = bits.view(np.float32)
    x = x[np.isfinite(x) & (np.abs(x) < 3.38e38)]  # rounds to a finite bfloat16
    got = np.concatenate(_collect(merge.LeafOp("pair", "keep_a"), [x, x], None, ml_dtypes.bfloat16))
    assert got.tobytes() == x.astype(ml_dtypes.bfloat16).tobytes()


def test_streamed_non_finite_inputs_and_results_are_refused():
    a = np.ones(100, np.float32)
    b = a.copy()
    b[57] = np.inf
    with pytest.raises(stream.NonFinite) as err:
        stream.prepare(merge.LeafOp("pair", "lerp"), [a, b], t=0.5, chunk=16)
    assert err.value.which == 1
    huge = np.full(100, 3e38, np.float32)  # finite, but its squares overflow: accepted
    prepared = stream.prepare(merge.LeafOp("pair", "lerp"), [huge, huge], t=0.5, chunk=16)
    written = []
    stream.emit(prepared, stream.Sink(written.append), np.float32)
    assert len(written) == 7
    prepared = stream.prepare(merge.LeafOp("pair", "lerp"), [huge, huge], t=2.0, chunk=16)
    written.clear()
    with pytest.raises(stream.NonFinite) as err:  # -3e38 + 6e38 overflows
        stream.emit(prepared, stream.Sink(written.append), np.float32)
    assert err.value.which is None and not written  # refused before the chunk is written


def test_streamed_mixed_precision_inputs_and_exact_end_points():
    rng = np.random.default_rng(8)
    a = rng.standard_normal(300).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(300).astype(np.float32)
    leaf_op = merge.LeafOp("pair", "spherical")
    out = lambda t, dtype: np.concatenate(_collect(leaf_op, [a, b], t, dtype))
    # mixed inputs meet in float32; the output takes the requested (first model's) dtype
    want = mergekit_slerp(0.4, a.astype(np.float32), b)
    np.testing.assert_allclose(out(0.4, np.float32), want, rtol=1e-5, atol=1e-6)
    got = out(0.4, ml_dtypes.bfloat16)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=1e-2)
    assert out(0.0, ml_dtypes.bfloat16).tobytes() == a.tobytes()  # the input itself
    assert out(1.0, np.float32).tobytes() == b.tobytes()


def _collect(leaf_op, xs, t, dtype):
    parts = []
    stream.merge_streamed(leaf_op, xs, lambda c: parts.append(np.array(c)), dtype, t=t, chunk=64)
    return parts
