//! A decoder-only (GPT-style) byte-level transformer in dfdx 0.13: token and learned position
//! embeddings, `L` pre-norm blocks of causal multi-head self-attention and a ReLU² MLP, a final
//! layer norm and a linear head over the [`VOCAB`] byte tokens.
//!
//! ```text
//! x = embed[tokens] + pos_embed[0..s]                      (b, s, M)
//! for each block:  x = x + attn(ln1(x));  x = x + mlp(ln2(x))
//! attn(h) = proj(concat_heads(softmax(q kᵀ / sqrt(M/H) + causal) v)),  q, k, v = wq h, wk h, wv h
//! mlp(h)  = proj(relu(fc h)²)                                (fc: M → F, proj: F → M)
//! logits  = head(ln_f(x))                                   (b, s, VOCAB)
//! ```
//!
//! dfdx 0.13's `MultiHeadAttention` takes no mask, so attention is written from tensor ops: the
//! scores get an additive mask of `-1e9` above the diagonal (`upper_tri_like(.., 1)`), which
//! makes their softmax weight exactly 0 in `f32`. Activations are kept as `(b·s, M)` matrices
//! so that every linear layer is one large matrix product; they are reshaped to
//! `(b, H, s, M/H)` only inside attention.
//!
//! Parameter names (dfdx's dotted paths, what optimizers route on): `embed.weight`,
//! `pos_embed.weight`, `blocks.{i}.ln1.{gamma,beta}`, `blocks.{i}.attn.{wq,wk,wv,proj}.{weight,bias}`,
//! `blocks.{i}.ln2.*`, `blocks.{i}.mlp.{fc,proj}.*`, `ln_f.*`, `head.{weight,bias}`. The
//! embeddings and the head contain `embed` / `head`, so the zoo's `Muon` gives them AdamW.
//!
//! The six projections of each block are of a [`LinearKind`]: dfdx's `Linear` ([`Plain`], the
//! default) or `optim_dsl::kfac::KfacLinear` ([`Kfac`]: the same forward and weights, plus the
//! capture of K-FAC's activation and output-gradient statistics, with three non-trainable
//! buffers `kfac_a`, `kfac_g`, `kfac_n` per projection). The head stays a plain `Linear`.
//!
//! Initialisation is dfdx's default for each module: linear layers `U(±1/sqrt(fan_in))`
//! (weights and biases), embeddings `U(±1/sqrt(rows))`, layer norms `γ = 1, β = 0`.

use dfdx::nn::modules::{Embedding, LayerNorm1D, Linear, Repeated};
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::nn::{BuildModule, Module};
use dfdx::shapes::{Axes2, Axes4, Axis, Const, Dtype, HasShape};
use dfdx::tensor::{
    AsArray, Cpu, Gradients, Merge, NoneTape, PutTape, SplitTape, Storage, Tape, Tensor,
    TensorFromVec, Trace, TriangleTensor, WithEmptyTape,
};
use dfdx::tensor_ops::{
    Backward, BroadcastTo, Device, GatherTo, MeanTo, PermuteTo, ReshapeTo, SelectTo, TryMatMul,
};
use optim_dsl::kfac::KfacLinear;

pub use crate::data::text::VOCAB;

/// The additive attention mask value above the diagonal: `exp(-1e9 + score)` is exactly 0.
const MASKED: f32 = -1e9;

/// The kind of linear layer of the blocks' six projections (`wq`, `wk`, `wv`, `attn.proj`,
/// `mlp.fc`, `mlp.proj`): [`Plain`] (dfdx's `Linear`) or [`Kfac`] (`optim_dsl::kfac::KfacLinear`,
/// the same forward and initialisation plus K-FAC statistic capture). The embeddings, layer
/// norms and the head are the same for both.
pub trait LinearKind: Clone + std::fmt::Debug + Default + 'static {
    /// The layer `I → O` (weight `[O, I]`, bias `[O]`).
    type Layer<const I: usize, const O: usize, E: Dtype, D: Storage<E>>: Clone + std::fmt::Debug;

    /// The layer's forward on `(rows, I)` activations: `x Wᵀ + b`, `(rows, O)`.
    fn forward<const I: usize, const O: usize, Tp: Tape<f32, Cpu>>(
        layer: &Self::Layer<I, O, f32, Cpu>,
        x: Act<I, Tp>,
    ) -> Act<O, Tp>;
}

/// The blocks use dfdx's `Linear` (the comparison's model, [`crate::charlm::CharLm`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plain;

/// The blocks use `KfacLinear`, which records `Σ a aᵀ` and `Σ ĝ ĝᵀ` during backward for
/// `optim_dsl::kfac::KfacStats` ([`crate::charlm::KfacCharLm`]). Built from the same seed, a
/// `Kfac` model has exactly the weights of the [`Plain`] one (`KfacLinear` initialises as
/// `Linear`, and its statistic buffers draw no random numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kfac;

impl LinearKind for Plain {
    type Layer<const I: usize, const O: usize, E: Dtype, D: Storage<E>> = Linear<I, O, E, D>;

    fn forward<const I: usize, const O: usize, Tp: Tape<f32, Cpu>>(
        layer: &Linear<I, O, f32, Cpu>,
        x: Act<I, Tp>,
    ) -> Act<O, Tp> {
        layer.forward(x)
    }
}

impl LinearKind for Kfac {
    type Layer<const I: usize, const O: usize, E: Dtype, D: Storage<E>> = KfacLinear<I, O, E, D>;

    fn forward<const I: usize, const O: usize, Tp: Tape<f32, Cpu>>(
        layer: &KfacLinear<I, O, f32, Cpu>,
        x: Act<I, Tp>,
    ) -> Act<O, Tp> {
        layer.forward(x)
    }
}

/// Causal multi-head self-attention over `M` features with `H` heads (`M % H == 0`, checked
/// when the model is built); projections of kind `K`.
#[derive(Debug, Clone)]
pub struct CausalSelfAttention<
    const M: usize,
    const H: usize,
    E: Dtype,
    D: Storage<E>,
    K: LinearKind = Plain,
> {
    /// Query projection, `M → M`.
    pub wq: K::Layer<M, M, E, D>,
    /// Key projection, `M → M`.
    pub wk: K::Layer<M, M, E, D>,
    /// Value projection, `M → M`.
    pub wv: K::Layer<M, M, E, D>,
    /// Output projection, `M → M`.
    pub proj: K::Layer<M, M, E, D>,
}

/// The feed-forward part of a block: `M → F → ReLU² → M`; layers of kind `K`.
#[derive(Debug, Clone)]
pub struct FeedForward<
    const M: usize,
    const F: usize,
    E: Dtype,
    D: Storage<E>,
    K: LinearKind = Plain,
> {
    /// Expansion, `M → F`.
    pub fc: K::Layer<M, F, E, D>,
    /// Contraction, `F → M`.
    pub proj: K::Layer<F, M, E, D>,
}

/// One pre-norm transformer block; projections of kind `K`.
#[derive(Debug, Clone)]
pub struct Block<
    const M: usize,
    const H: usize,
    const F: usize,
    E: Dtype,
    D: Storage<E>,
    K: LinearKind = Plain,
> {
    /// Layer norm before attention.
    pub ln1: LayerNorm1D<M, E, D>,
    /// Causal self-attention.
    pub attn: CausalSelfAttention<M, H, E, D, K>,
    /// Layer norm before the MLP.
    pub ln2: LayerNorm1D<M, E, D>,
    /// The MLP.
    pub mlp: FeedForward<M, F, E, D, K>,
}

/// The byte-level transformer: width `M`, `H` heads, MLP width `F`, `L` blocks, context `T`,
/// block projections of kind `K` ([`Plain`] by default). See the module docs for the
/// architecture and parameter names.
#[derive(Debug, Clone)]
pub struct CharTransformer<
    const M: usize,
    const H: usize,
    const F: usize,
    const L: usize,
    const T: usize,
    E: Dtype,
    D: Storage<E>,
    K: LinearKind = Plain,
> {
    /// Token embedding, `VOCAB × M`.
    pub embed: Embedding<VOCAB, M, E, D>,
    /// Learned position embedding, `T × M`.
    pub pos_embed: Embedding<T, M, E, D>,
    /// The blocks (`blocks.0`, `blocks.1`, …).
    pub blocks: Repeated<Block<M, H, F, E, D, K>, L>,
    /// Final layer norm.
    pub ln_f: LayerNorm1D<M, E, D>,
    /// Output head, `M → VOCAB` (logits).
    pub head: Linear<M, VOCAB, E, D>,
}

macro_rules! collection {
    ($kind:ty: $ty:ident < $($c:ident),* > { $($field:ident),* }) => {
        impl<$(const $c: usize,)* D: Device<f32>> TensorCollection<f32, D> for $ty<$($c,)* f32, D, $kind> {
            type To<E2: Dtype, D2: Device<E2>> = $ty<$($c,)* E2, D2, $kind>;

            fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
                visitor: &mut V,
            ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                visitor.visit_fields(
                    ($(Self::module(stringify!($field), |s| &s.$field, |s| &mut s.$field),)*),
                    |($($field,)*)| $ty { $($field),* },
                )
            }
        }
    };
}

// one impl per kind: the field types are then concrete (`Linear` or `KfacLinear`)
macro_rules! collections {
    ($($kind:ty),*) => {$(
        collection!($kind: CausalSelfAttention<M, H> { wq, wk, wv, proj });
        collection!($kind: FeedForward<M, F> { fc, proj });
        collection!($kind: Block<M, H, F> { ln1, attn, ln2, mlp });
        collection!($kind: CharTransformer<M, H, F, L, T> { embed, pos_embed, blocks, ln_f, head });
    )*};
}
collections!(Plain, Kfac);

/// Activations: `(b·s, M)` rows, one per token, carrying tape `Tp`.
pub type Act<const M: usize, Tp> = Tensor<(usize, Const<M>), f32, Cpu, Tp>;

/// How the activation rows are laid out: `b` sequences of length `s`, with the `(s, s)`
/// additive causal `mask` of their attention.
struct Batch<'a> {
    b: usize,
    s: usize,
    mask: &'a Tensor<(usize, usize), f32, Cpu>,
}

impl<const M: usize, const H: usize, K: LinearKind> CausalSelfAttention<M, H, f32, Cpu, K> {
    /// `x`: `(b·s, M)` rows laid out as `batch` says.
    fn forward<Tp>(&self, x: Act<M, Tp>, batch: &Batch<'_>) -> Act<M, Tp>
    where
        Tp: Tape<f32, Cpu> + Merge<Tp> + Merge<NoneTape>,
    {
        let Batch { b, s, mask } = *batch;
        let dh = M / H;
        let q = K::forward(&self.wq, x.with_empty_tape());
        let k = K::forward(&self.wk, x.with_empty_tape());
        let v = K::forward(&self.wv, x);
        let q = q
            .reshape_like(&(b, s, H, dh))
            .permute::<_, Axes4<0, 2, 1, 3>>(); // (b, H, s, dh)
        let k = k
            .reshape_like(&(b, s, H, dh))
            .permute::<_, Axes4<0, 2, 3, 1>>(); // (b, H, dh, s)
        let v = v
            .reshape_like(&(b, s, H, dh))
            .permute::<_, Axes4<0, 2, 1, 3>>(); // (b, H, s, dh)
        let scale = 1.0 / (dh as f32).sqrt();
        let scores = q.matmul(k) * scale; // (b, H, s, s)
        let scores = scores + mask.clone().broadcast_like::<_, Axes2<0, 1>>(&(b, H, s, s));
        let weights = scores.softmax::<Axis<3>>();
        let y = weights.matmul(v); // (b, H, s, dh)
        let y = y
            .permute::<_, Axes4<0, 2, 1, 3>>()
            .reshape_like(&(b * s, Const::<M>));
        K::forward(&self.proj, y)
    }
}

impl<const M: usize, const F: usize, K: LinearKind> FeedForward<M, F, f32, Cpu, K> {
    fn forward<Tp: Tape<f32, Cpu> + Merge<Tp>>(&self, x: Act<M, Tp>) -> Act<M, Tp> {
        K::forward(&self.proj, K::forward(&self.fc, x).relu().square())
    }
}

impl<const M: usize, const H: usize, const F: usize, K: LinearKind> Block<M, H, F, f32, Cpu, K> {
    fn forward<Tp>(&self, x: Act<M, Tp>, batch: &Batch<'_>) -> Act<M, Tp>
    where
        Tp: Tape<f32, Cpu> + Merge<Tp> + Merge<NoneTape>,
    {
        let h = self
            .attn
            .forward(self.ln1.forward(x.with_empty_tape()), batch);
        let x = x + h;
        let h = self.mlp.forward(self.ln2.forward(x.with_empty_tape()));
        x + h
    }
}

impl<
        const M: usize,
        const H: usize,
        const F: usize,
        const L: usize,
        const T: usize,
        K: LinearKind,
    > CharTransformer<M, H, F, L, T, f32, Cpu, K>
{
    /// Width.
    pub const WIDTH: usize = M;
    /// Number of heads.
    pub const HEADS: usize = H;
    /// MLP width.
    pub const MLP: usize = F;
    /// Number of blocks.
    pub const LAYERS: usize = L;
    /// Context length (the longest sequence the position embedding covers).
    pub const CONTEXT: usize = T;

    /// Builds the model on `dev` with dfdx's default initialisation (seed the device for
    /// reproducible weights: `Cpu::seed_from_u64`).
    ///
    /// # Panics
    /// If `M` is not a multiple of `H` (a compile-time configuration error).
    pub fn build_on(dev: &Cpu) -> Self
    where
        Self: BuildModule<Cpu, f32>,
    {
        assert!(
            H > 0 && M.is_multiple_of(H),
            "width {M} is not a multiple of {H} heads"
        );
        <Self as BuildModule<Cpu, f32>>::build(dev)
    }

    /// Logits `(b·s, VOCAB)` (row `i·s + j` predicts the token after position `j` of sequence
    /// `i`) for `tokens`, `(b, s)` with `1 <= s <= T`. The tape of `tokens` (e.g.
    /// `tokens.traced(grads)`) records the whole forward pass.
    ///
    /// # Panics
    /// If `s` is 0 or larger than `T`, or a token is `>= VOCAB`.
    pub fn logits<Tp>(
        &self,
        tokens: Tensor<(usize, usize), usize, Cpu, Tp>,
    ) -> Tensor<(usize, Const<VOCAB>), f32, Cpu, Tp>
    where
        Tp: Tape<f32, Cpu> + Merge<Tp> + Merge<NoneTape>,
    {
        let dev = tokens.device().clone();
        let (b, s) = *tokens.shape();
        assert!(s >= 1 && s <= T, "sequence length {s} outside 1..={T}");
        let (tokens, tape) = tokens.split_tape();
        let x = self.embed.weight.clone().put_tape(tape).gather(tokens); // (b, s, M)
        let positions: Tensor<(usize,), usize, Cpu> = dev.tensor_from_vec((0..s).collect(), (s,));
        let pos = self
            .pos_embed
            .weight
            .retaped::<Tp>()
            .gather(positions)
            .broadcast_like::<_, Axis<0>>(&(b, s, Const::<M>));
        let mut x = (x + pos).reshape_like(&(b * s, Const::<M>));
        let mask = dev.upper_tri_like(&(s, s), MASKED, 1);
        let batch = Batch { b, s, mask: &mask };
        for block in &self.blocks.modules {
            x = block.forward(x, &batch);
        }
        self.head.forward(self.ln_f.forward(x))
    }

    /// Mean cross-entropy (nats per token) of predicting `targets` (`b·s` tokens, row-major)
    /// after `tokens` (`(b, s)`), as a scalar tensor carrying the tape of `tokens`.
    ///
    /// # Panics
    /// As [`logits`](Self::logits); if `targets.len() != b·s` or a target is `>= VOCAB`.
    pub fn loss<Tp>(
        &self,
        tokens: Tensor<(usize, usize), usize, Cpu, Tp>,
        targets: &[u8],
    ) -> Tensor<(), f32, Cpu, Tp>
    where
        Tp: Tape<f32, Cpu> + Merge<Tp> + Merge<NoneTape>,
    {
        let dev = tokens.device().clone();
        let n = tokens.shape().0 * tokens.shape().1;
        assert_eq!(targets.len(), n, "need one target per input token");
        assert!(
            targets.iter().all(|&t| usize::from(t) < VOCAB),
            "target out of the vocabulary"
        );
        let idx: Tensor<(usize,), usize, Cpu> =
            dev.tensor_from_vec(targets.iter().map(|&t| usize::from(t)).collect(), (n,));
        let logp = self.logits(tokens).log_softmax::<Axis<1>>();
        -logp.select(idx).mean()
    }
}

/// Builds the token tensor `(b, s)` from `b·s` row-major byte tokens.
///
/// # Panics
/// If `tokens.len() != b · s`.
pub fn token_tensor(
    dev: &Cpu,
    tokens: &[u8],
    b: usize,
    s: usize,
) -> Tensor<(usize, usize), usize, Cpu> {
    assert_eq!(tokens.len(), b * s, "expected {b} × {s} tokens");
    dev.tensor_from_vec(tokens.iter().map(|&t| usize::from(t)).collect(), (b, s))
}

/// One training forward/backward pass: the loss (nats per token) of `targets` after `inputs`
/// (`b` windows of `s` tokens), with the gradients written into `grads` (which must come from
/// `model.alloc_grads()`; they are overwritten, not accumulated, when `grads` was zeroed).
pub fn loss_and_grads<
    const M: usize,
    const H: usize,
    const F: usize,
    const L: usize,
    const T: usize,
    K: LinearKind,
>(
    dev: &Cpu,
    model: &CharTransformer<M, H, F, L, T, f32, Cpu, K>,
    grads: &mut Gradients<f32, Cpu>,
    inputs: &[u8],
    targets: &[u8],
    b: usize,
) -> f32 {
    let s = inputs.len() / b.max(1);
    let x = token_tensor(dev, inputs, b, s);
    let taken = std::mem::replace(grads, Gradients::leaky());
    let loss = model.loss(x.traced(taken), targets);
    let value = loss.array();
    *grads = loss.backward();
    value
}

/// Mean cross-entropy (nats per token) of `model` over `windows` of `s` tokens
/// (`(inputs, targets)` as from [`Corpus::windows`](crate::data::text::Corpus::windows)),
/// without a tape, in chunks of `chunk` windows.
pub fn evaluate<
    const M: usize,
    const H: usize,
    const F: usize,
    const L: usize,
    const T: usize,
    K: LinearKind,
>(
    dev: &Cpu,
    model: &CharTransformer<M, H, F, L, T, f32, Cpu, K>,
    windows: &(Vec<u8>, Vec<u8>),
    s: usize,
    chunk: usize,
) -> f64 {
    let (inputs, targets) = windows;
    let per = s * chunk.max(1);
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (x, y) in inputs.chunks(per).zip(targets.chunks(per)) {
        let b = x.len() / s;
        let loss = model.loss(token_tensor(dev, x, b, s), y);
        sum += f64::from(loss.array()) * x.len() as f64;
        count += x.len();
    }
    sum / count.max(1) as f64
}

// Module impl so that generic dfdx code (e.g. `ModelEMA`, `forward`) can drive the model.
impl<
        const M: usize,
        const H: usize,
        const F: usize,
        const L: usize,
        const T: usize,
        K: LinearKind,
        Tp,
    > Module<Tensor<(usize, usize), usize, Cpu, Tp>> for CharTransformer<M, H, F, L, T, f32, Cpu, K>
where
    Tp: Tape<f32, Cpu> + Merge<Tp> + Merge<NoneTape>,
{
    type Output = Tensor<(usize, Const<VOCAB>), f32, Cpu, Tp>;
    type Error = <Cpu as dfdx::tensor::HasErr>::Err;

    fn try_forward(
        &self,
        tokens: Tensor<(usize, usize), usize, Cpu, Tp>,
    ) -> Result<Self::Output, Self::Error> {
        Ok(self.logits(tokens))
    }
}

impl<
        const M: usize,
        const H: usize,
        const F: usize,
        const L: usize,
        const T: usize,
        K: LinearKind,
    > dfdx::nn::NonMutableModule for CharTransformer<M, H, F, L, T, f32, Cpu, K>
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charlm::{KfacTinyLm, TinyLm};

    #[test]
    fn attention_is_causal() {
        // Changing token j must leave the logits of every position before j unchanged, and
        // change those at j and after.
        let dev = Cpu::seed_from_u64(1);
        let model = TinyLm::build_on(&dev);
        let s = TinyLm::CONTEXT;
        let a: Vec<u8> = (0..s as u8).map(|i| b'a' + i % 26).collect();
        let mut b = a.clone();
        let j = 9;
        b[j] = b'Z';
        let la = model.logits(token_tensor(&dev, &a, 1, s)).as_vec();
        let lb = model.logits(token_tensor(&dev, &b, 1, s)).as_vec();
        for pos in 0..s {
            let (ra, rb) = (&la[pos * VOCAB..][..VOCAB], &lb[pos * VOCAB..][..VOCAB]);
            let diff = ra
                .iter()
                .zip(rb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            if pos < j {
                assert_eq!(diff, 0.0, "position {pos} sees the future");
            } else {
                assert!(diff > 1e-6, "position {pos} ignores token {j}");
            }
        }
    }

    #[test]
    fn batched_rows_are_independent_and_match_single_sequences() {
        let dev = Cpu::seed_from_u64(2);
        let model = TinyLm::build_on(&dev);
        let s = 12; // shorter than the context
        let x: Vec<u8> = (0..2 * s).map(|i| b'A' + (i * 7 % 26) as u8).collect();
        let both = model.logits(token_tensor(&dev, &x, 2, s)).as_vec();
        let second = model.logits(token_tensor(&dev, &x[s..], 1, s)).as_vec();
        for (u, v) in both[s * VOCAB..].iter().zip(&second) {
            assert!((u - v).abs() < 1e-5, "{u} vs {v}");
        }
    }

    #[test]
    fn loss_is_the_mean_negative_log_likelihood() {
        let dev = Cpu::seed_from_u64(3);
        let model = TinyLm::build_on(&dev);
        let x = b"to be or not to".to_vec();
        let y = b"o be or not to ".to_vec();
        let s = x.len();
        let logits = model.logits(token_tensor(&dev, &x, 1, s)).as_vec();
        let mut nll = 0.0f64;
        for (row, &t) in logits.chunks(VOCAB).zip(&y) {
            let max = row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            nll += lse - row[usize::from(t)] as f64;
        }
        nll /= s as f64;
        let loss = model.loss(token_tensor(&dev, &x, 1, s), &y).array() as f64;
        assert!((loss - nll).abs() < 1e-5, "{loss} vs {nll}");
    }

    #[test]
    fn kfac_projections_have_the_plain_weights_and_forward() {
        // Same seed: KfacLinear initialises like Linear and its buffers draw nothing, so every
        // trainable tensor and every logit agree exactly.
        let plain = TinyLm::build_on(&Cpu::seed_from_u64(4));
        let dev = Cpu::seed_from_u64(4);
        let kfac = KfacTinyLm::build_on(&dev);
        let (pb, kb) = (&plain.blocks.modules[0], &kfac.blocks.modules[0]);
        assert_eq!(pb.attn.wq.weight.as_vec(), kb.attn.wq.weight.as_vec());
        assert_eq!(pb.mlp.proj.bias.as_vec(), kb.mlp.proj.bias.as_vec());
        assert_eq!(plain.head.weight.as_vec(), kfac.head.weight.as_vec());
        let x: Vec<u8> = b"what's in a name".to_vec();
        let s = x.len();
        let lp = plain.logits(token_tensor(&dev, &x, 1, s)).as_vec();
        let lk = kfac.logits(token_tensor(&dev, &x, 1, s)).as_vec();
        assert_eq!(lp, lk);
        assert!(kb.attn.wq.kfac_a.as_vec().iter().all(|&v| v == 0.0));
    }
}
