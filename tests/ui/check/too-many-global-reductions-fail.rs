// A rule with five global reductions: the runtime keeps a fixed table of four global totals per
// rule, and a fifth would silently be dropped. We want one error, on the fifth
// `clip_global_norm(...)` call, saying at most 4 global reductions are allowed.
use optim_dsl::prelude::*;

optimizer! {
    ManyClips<lr = 0.1> {
        let a = clip_global_norm(grad, 1.0);
        let b = clip_global_norm(a, 1.0);
        let c = clip_global_norm(b, 1.0);
        let d = clip_global_norm(c, 1.0);
        let e = clip_global_norm(d, 1.0);
        param -= lr * e;
    }
}

fn main() {}
