//! Parameters as the kernels see them: named flat buffers with a shape.

/// One parameter and its gradient for the framework-neutral entry point
/// [`crate::DslOptimizer::update_slices`].
///
/// `param` and `grad` are row-major and must both have `shape.iter().product()` elements
/// (a scalar parameter has `shape = []` and one element).
#[derive(Debug)]
pub struct ParamSlice<'a, E> {
    /// Unique name; the optimizer's state for this parameter is keyed by it.
    pub name: &'a str,
    /// Logical shape (`[]` for a scalar, `[n]` for a vector, `[rows, cols]` for a matrix, ...).
    pub shape: &'a [usize],
    /// The parameter, updated in place.
    pub param: &'a mut [E],
    /// Its gradient (read only on this path).
    pub grad: &'a [E],
}

/// What routing rules and shape scalars see of a parameter.
///
/// Shape scalars follow the matrix view of the parameter: rank 0 is `1 × 1`, rank 1 (`[n]`) is
/// `n × 1`, and rank ≥ 2 (`[d0, d1, ...]`) is `d0 × (d1·d2·…)` — a PyTorch/dfdx weight
/// `[out, in]` has `rows = fan_out = out` and `cols = fan_in = in`; a conv kernel
/// `[out, in, kh, kw]` has `fan_in = in·kh·kw`.
///
/// Rule guards can also test the enclosing module (`module == "Embedding"` on dfdx, where it is
/// the module's type; `module.ends_with("attn.q")` on candle, where it is the module's path).
#[derive(Debug, Clone, Copy)]
pub struct ParamInfo<'a> {
    /// Parameter name.
    pub name: &'a str,
    /// Logical shape.
    pub shape: &'a [usize],
    /// The module holding the parameter. dfdx path: the type name of the innermost module
    /// (`"Linear"`, `"Embedding"`, `"Conv2D"`, `"LayerNorm1D"`, … — the type's last path segment
    /// without its generic arguments). candle path: the module's path, the `Var`'s name up to
    /// its last `.` (`"blocks.0.attn.q"` for `"blocks.0.attn.q.weight"`; candle records no
    /// module types). Slice path: `""`, or what
    /// [`update_slices_in_modules`](crate::DslOptimizer::update_slices_in_modules) passes.
    pub module: &'a str,
}

impl<'a> ParamInfo<'a> {
    /// Info for a parameter with no known module.
    pub fn new(name: &'a str, shape: &'a [usize]) -> Self {
        ParamInfo {
            name,
            shape,
            module: "",
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Rows of the matrix view.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
    /// Columns of the matrix view.
    pub fn cols(&self) -> usize {
        if self.shape.len() < 2 {
            1
        } else {
            self.shape[1..].iter().product()
        }
    }
    /// Inputs per output unit (`cols`).
    pub fn fan_in(&self) -> usize {
        self.cols()
    }
    /// Output units (`rows`).
    pub fn fan_out(&self) -> usize {
        self.rows()
    }
    /// Whether the parameter is a matrix (rank 2).
    pub fn is_matrix(&self) -> bool {
        self.shape.len() == 2
    }
    /// Whether the parameter is a vector (rank 1).
    pub fn is_vector(&self) -> bool {
        self.shape.len() == 1
    }
    /// Whether the parameter is a scalar (rank 0).
    pub fn is_scalar(&self) -> bool {
        self.shape.is_empty()
    }
}
