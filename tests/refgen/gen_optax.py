"""optax_adam_f32_scalars: optax.adam (optax 0.2.8, jax[cpu]) with float32 params, where optax computes the bias
corrections 1 - b**count in float32. The float64 re-run needs jax_enable_x64, which would change the float32 run's
scalar dtypes, so it runs in a child process (`gen_optax.py --f64`)."""

import json
import subprocess
import sys

import numpy as np

NAMES = ["w_16x8", "w_8x16", "b_8", "s_1"]
HP = dict(learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0)


def run_optax(dtype):
    import jax
    import jax.numpy as jnp
    import optax

    import common as C
    init = C.make_init(C.SHAPES)
    grads = C.make_grads(C.SHAPES, C.SCALES)
    params = {n: jnp.asarray(init[n], dtype=dtype) for n in NAMES}
    opt = optax.adam(**HP)
    state = opt.init(params)

    @jax.jit
    def step(params, state, g):
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state

    traj = []
    for t in range(C.STEPS):
        g = {n: jnp.asarray(grads[t][n], dtype=dtype) for n in NAMES}
        params, state = step(params, state, g)
        traj.append({n: np.asarray(params[n]) for n in NAMES})
    # the bias corrections exactly as optax computes them (same expression, jitted, int32 count)
    bc = jax.jit(lambda c: (1 - HP["b1"] ** c, 1 - HP["b2"] ** c))
    bcs = [tuple(float(x) for x in bc(jnp.asarray(t + 1, jnp.int32))) for t in range(C.STEPS)]
    return traj, state, bcs


def emulate(init, grads, bc_fn):
    """numpy float32 emulation of scale_by_adam + scale_by_learning_rate + apply_updates, bias corrections from bc_fn."""
    f = np.float32
    p = {n: init[n].copy() for n in NAMES}
    mu = {n: np.zeros_like(p[n]) for n in NAMES}
    nu = {n: np.zeros_like(p[n]) for n in NAMES}
    out = []
    for t in range(len(grads)):
        bc1, bc2 = bc_fn(t + 1)
        for n in NAMES:
            g = grads[t][n]
            mu[n] = f(1 - HP["b1"]) * g + f(HP["b1"]) * mu[n]
            nu[n] = f(1 - HP["b2"]) * (g * g) + f(HP["b2"]) * nu[n]
            mh = mu[n] / f(bc1)
            nh = nu[n] / f(bc2)
            u = mh / (np.sqrt(nh + f(0.0)) + f(HP["eps"]))
            p[n] = p[n] + f(-HP["learning_rate"]) * u
        out.append({n: p[n].copy() for n in NAMES})
    return out


def main():
    if "--f64" in sys.argv:
        import jax
        jax.config.update("jax_enable_x64", True)
        traj, _, _ = run_optax(np.float64)
        json.dump([{n: t[n].ravel().tolist() for n in NAMES} for t in traj], sys.stdout)
        return

    import jax
    import optax

    import common as C
    init = C.make_init(C.SHAPES)
    grads = C.make_grads(C.SHAPES, C.SCALES)
    t32, state, bcs = run_optax(np.float32)
    child = subprocess.run([sys.executable, __file__, "--f64"], capture_output=True, text=True, check=True)
    t64 = [{n: np.asarray(t[n]).reshape(C.SHAPES[n]) for n in NAMES} for t in json.loads(child.stdout)]

    bc64 = lambda t: (1 - HP["b1"] ** t, 1 - HP["b2"] ** t)
    bc32_np = lambda t: (np.float32(1) - np.float32(HP["b1"]) ** np.int32(t),
                         np.float32(1) - np.float32(HP["b2"]) ** np.int32(t))
    bc32_optax = lambda t: bcs[t - 1]
    emu_optax_bc = emulate(init, grads, bc32_optax)
    emu_f64 = emulate(init, grads, bc64)
    emu_np32 = emulate(init, grads, bc32_np)

    def maxdiff(a, b):
        return max(float(np.abs(x[n].astype(np.float64) - y[n].astype(np.float64)).max())
                   for x, y in zip(a, b) for n in NAMES)

    tolerance = C.tol(1e-6, 3e-7, "TIGHT on purpose: this case exists to tell the opt-in 'scalars in parameter "
                      "precision' mode from the default f64-scalar mode. A float32 re-implementation with optax's "
                      "float32 bias corrections lands within checks.emulation_f32_scalars_vs_optax (XLA may fuse or "
                      "reorder ops, so not bit-exact) = ratio < 1 of this tolerance; the f64-scalar trajectory "
                      "(extra.params_f64_scalars) exceeds it (checks.f64_scalar_vs_optax.ratio_to_tolerance > 1). "
                      "For the default mode compare params_f64_scalars, or params with the element-wise "
                      "rtol 1e-5 / atol 1e-6 (the float64 re-run below is measured against THIS tight tolerance, "
                      "hence its large ratio: its bias corrections are float64)")
    sem = f"""optax 0.2.8 optax.adam(learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0) = chain(scale_by_adam,
scale_by_learning_rate(0.01)), jitted, jax CPU, float32 params (jax_enable_x64 off). All arithmetic is float32; python
float hyper-parameters enter as weak-typed float32 constants. Per step, count (int32, starts 0):
  mu = f32(1 - b1) * g + f32(b1) * mu                     # tree_update_moment: (1-decay)*g**1 + decay*t
  nu = f32(1 - b2) * g**2 + f32(b2) * nu                  # tree_update_moment_per_elem_norm, order 2
  count = count + 1                                       # safe_increment (int32)
  bc1 = 1 - b1 ** count ; bc2 = 1 - b2 ** count           # tree_bias_correction: decay**count with an int32 count ->
                                                          #   computed IN FLOAT32 by XLA (f32(0.999)**t, then 1 - that in f32)
  mu_hat = mu / bc1 ; nu_hat = nu / bc2                   # DIVISION by the float32 scalar
  u = mu_hat / (sqrt(nu_hat + eps_root) + eps)            # eps outside sqrt, after bias correction
  u = f32(-learning_rate) * u                             # scale_by_learning_rate
  p = p + u                                               # apply_updates
The only difference from a 'float64 scalar' implementation is bc1/bc2: extra.bias_corrections_f32[t] holds optax's
float32 values (as exact decimals), extra.bias_corrections_f64[t] the float64 ones. At t = 1, bc2_f32 =
{bcs[0][1]!r} vs 0.001 (1.3e-5 relative: f32(0.999) = 0.99900001287...).
extra.params_f64_scalars[t]: the same float32 tensor arithmetic (numpy emulation above) with bc1/bc2 computed in
float64 and rounded to float32 before dividing -- what the default Rust mode (f64 scalars) should produce.
State (final_state): optax ScaleByAdamState count / mu / nu, keyed by pytree path."""
    leaves = {"[0].count": {"shape": [], "data": [int(state[0].count)], "dtype": "int32"}}
    for n in NAMES:
        leaves[f"[0].mu['{n}']"] = C.tensor_json(np.asarray(state[0].mu[n]))
        leaves[f"[0].nu['{n}']"] = C.tensor_json(np.asarray(state[0].nu[n]))
    case = C.base_case(
        "optax_adam_f32_scalars", "optax.adam with float32 params: bias corrections computed in float32 by optax; "
        "also the trajectory a float64-scalar implementation gives (extra.params_f64_scalars).",
        {"library": "optax", "version": optax.__version__, "api": "optax.adam(learning_rate=0.01, b1=0.9, b2=0.999, "
         "eps=1e-8, eps_root=0.0); updates, state = opt.update(g, state, params); params = optax.apply_updates(params, "
         "updates) under jax.jit", "code_path": f"jax {jax.__version__} CPU, float32, jax_enable_x64=False"},
        HP, sem, NAMES, C.SHAPES, C.SCALES, init, grads, [0.01] * C.STEPS, t32, leaves, None, tolerance,
        C.spread(t32, t64, tolerance["rtol"], tolerance["atol"]),
        extra={"params_f64_scalars": [{n: C.flat32(t[n]) for n in NAMES} for t in emu_f64],
               "bias_corrections_f32": [[C.fnum(a), C.fnum(b)] for a, b in bcs],
               "bias_corrections_f64": [[C.dnum(a), C.dnum(b)] for a, b in (bc64(t + 1) for t in range(C.STEPS))]},
        versions=C.library_versions())
    case["checks"]["f32_vs_f64_same_reference"]["meaning"] += (" (float64 run: jax_enable_x64=True in a child "
                                                               "process, params/grads float64)")
    def ratio(a, b):
        return max(float((np.abs(x[n].astype(np.float64) - y[n].astype(np.float64)) /
                          (tolerance["atol"] + tolerance["rtol"] * np.abs(y[n].astype(np.float64)))).max())
                   for x, y in zip(a, b) for n in NAMES)

    case["checks"]["emulation_f32_scalars_vs_optax"] = {
        "max_abs_diff": maxdiff(emu_optax_bc, t32), "ratio_to_tolerance": ratio(emu_optax_bc, t32),
        "meaning": "numpy float32 emulation using optax's own float32 bias corrections vs optax"}
    case["checks"]["emulation_numpy_f32_pow_vs_optax"] = {
        "max_abs_diff": maxdiff(emu_np32, t32), "ratio_to_tolerance": ratio(emu_np32, t32),
        "meaning": "same, bias corrections as numpy float32 1 - f32(b)**t"}
    d64 = maxdiff(emu_f64, t32)
    rel = max(float((np.abs(x[n].astype(np.float64) - y[n].astype(np.float64)) /
                     np.maximum(np.abs(y[n].astype(np.float64)), 1e-3)).max()) for x, y in zip(emu_f64, t32) for n in NAMES)
    case["checks"]["f64_scalar_vs_optax"] = {"max_abs_diff": d64, "max_rel_diff": rel,
                                             "ratio_to_tolerance": ratio(emu_f64, t32),
                                             "meaning": "extra.params_f64_scalars vs params (optax)"}
    C.write_case(case)


if __name__ == "__main__":
    main()
