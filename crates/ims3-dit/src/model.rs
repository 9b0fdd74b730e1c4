//! DiT (Peebles & Xie) with the Difffit scale factors of IMS3/Minimax, in one file.
//!
//! Field names mirror the keys of the official checkpoints (`x_embedder.proj`, `blocks.N.attn.qkv`,
//! ...); the few that cannot be Rust identifiers (`mlp.0`, `adaLN_modulation.1`) are renamed by
//! the loader (see `load.rs`). Shapes in comments use N = batch, T = tokens, D = hidden size,
//! C = channels, p = patch size.
//!
//! Precision: the network computes in the dtype of its weights ([`DiT::to_dtype`] casts them,
//! e.g. to bf16 for sampling on a GPU), and takes and returns tensors in the caller's dtype; the
//! timestep features and LayerNorm statistics are computed in f32, as PyTorch's autocast does.
//! The small parameters IM fine-tunes (biases, Difffit gammas, the label table) may be held in
//! f32 while the large frozen weights are bf16 (mixed-precision fine-tuning): each is cast to
//! the activations' dtype where it is used ([`linear`], [`in_dtype`]). With f32 weights (the
//! default, and the parity reference) every cast is a no-op.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::{silu, softmax};

use crate::config::DiTConfig;
pub use crate::gelu::gelu_tanh;

/// The dtype a DiT's weights are held and computed in (`--dtype`). f32 is the default and the
/// parity reference; bf16 halves the weights' memory and runs the GPU's bf16 tensor cores
/// (tested against the f32 oracles in `ims3-parity` and `tests/model.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

ims3_util::choice!(Precision, "dtype", { Precision::F32 => "f32", Precision::Bf16 => "bf16" });

impl Precision {
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
        }
    }
}

/// Which output channels classifier-free guidance mixes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CfgChannels {
    /// The reference (DiT/IMS3): only the first 3 of the 4 eps channels, "for exact
    /// reproducibility reasons".
    #[default]
    FirstThree,
    /// Standard CFG: every eps channel (`in_channels` of them).
    AllEps,
}

/// `p` in `dtype` (a no-op when it already is): a trained parameter in the activations' dtype.
pub fn in_dtype<const D: usize>(p: &Param<Tensor<D>>, dtype: burn::tensor::DType) -> Tensor<D> {
    p.val().cast(FloatDType::from(dtype))
}

/// `x W^T + b` in the weight's dtype (`x` and the bias cast to it): burn's `Linear::forward`,
/// for a bias that may be held in f32 beside a bf16 weight.
///
/// [N, T, D] inputs are multiplied as one [N*T, D] matrix: burn broadcasts the weight over N
/// otherwise, which on Flex is N products of T rows, each packing the whole weight again (at
/// sampling's 16 tokens the packing cost as much as the products), and under autodiff its weight
/// gradient is N products summed. The output and the input gradient keep their bits; the weight
/// gradient is one product over N*T rows, rounded differently
/// (`flattened_linear_keeps_the_output_bits` in `tests/model.rs`).
pub fn linear<const D: usize>(l: &Linear, x: Tensor<D>) -> Tensor<D> {
    let w = l.weight.val();
    let dtype = FloatDType::from(w.dtype());
    let bias = l.bias.as_ref().map(|b| b.val().cast(dtype));
    let dims = x.dims();
    if D <= 2 {
        return burn::tensor::module::linear(x.cast(dtype), w, bias);
    }
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = burn::tensor::module::linear(x.cast(dtype).reshape([rows, d_in]), w, bias);
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
}

/// `x * (1 + scale) + shift`, with `shift`, `scale`: [N, D] broadcast over tokens.
fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    x * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1)
}

/// LayerNorm over the last dim without affine parameters (eps 1e-6), as `nn.LayerNorm(D,
/// elementwise_affine=False, eps=1e-6)`.
/// Statistics and normalisation in f32 whatever the input's dtype; the result in the input's.
pub fn layer_norm_no_affine(x: Tensor<3>) -> Tensor<3> {
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let (var, mean) = x.clone().var_mean_bias(2);
    ((x - mean) / (var + 1e-6).sqrt()).cast(dtype)
}

/// timm `PatchEmbed`: conv p x p, stride p, then flatten to tokens.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

impl PatchEmbed {
    /// [N, C, H, W] -> [N, T, D] with T = (H/p)(W/p), row-major over the patch grid.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        // The patch convolution (valid padding) in the weight's dtype, the bias cast to it.
        let w = self.proj.weight.val();
        let dtype = FloatDType::from(w.dtype());
        let options = burn::tensor::ops::ConvOptions::new(self.proj.stride, [0, 0], self.proj.dilation, self.proj.groups);
        let bias = self.proj.bias.as_ref().map(|b| b.val().cast(dtype));
        let x = burn::tensor::module::conv2d(x.cast(dtype), w, bias, options); // [N, D, H/p, W/p]
        x.flatten::<3>(2, 3).swap_dims(1, 2)
    }
}

/// Sinusoidal timestep features followed by an MLP (`mlp.0`, SiLU, `mlp.2`).
#[derive(Module, Debug)]
pub struct TimestepEmbedder {
    pub mlp_0: Linear,
    pub mlp_2: Linear,
    pub frequency_embedding_size: usize,
}

impl TimestepEmbedder {
    /// GLIDE timestep embedding: `cat[cos(t f), sin(t f)]`, `f_i = exp(-ln(max_period) i / half)`.
    /// t: [N] (may be fractional) -> [N, dim].
    pub fn timestep_embedding(t: Tensor<1>, dim: usize, max_period: f64) -> Tensor<2> {
        let device = t.device();
        let half = dim / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (-(max_period.ln() as f32) * i as f32 / half as f32).exp())
            .collect();
        let freqs = Tensor::<1>::from_floats(freqs.as_slice(), &device);
        let args = t.unsqueeze_dim::<2>(1) * freqs.unsqueeze_dim::<2>(0); // [N, half]
        let mut emb = Tensor::cat(vec![args.clone().cos(), args.sin()], 1);
        if dim % 2 == 1 {
            let [n, _] = emb.dims();
            emb = Tensor::cat(vec![emb, Tensor::zeros([n, 1], &device)], 1);
        }
        emb
    }

    /// t: [N] -> [N, D].
    pub fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        // The features in f32 (t up to 999 times frequencies); `linear` casts them to the weights'.
        let t_freq = Self::timestep_embedding(t.cast(FloatDType::F32), self.frequency_embedding_size, 10_000.0);
        linear(&self.mlp_2, silu(linear(&self.mlp_0, t_freq)))
    }
}

/// Class-label table of `num_classes + 1` rows when label dropout is used; the last row is the
/// "null" label of classifier-free guidance.
#[derive(Module, Debug)]
pub struct LabelEmbedder {
    /// [num_classes + 1, D] (`embedding_table.weight`).
    pub embedding_table: Embedding,
    pub num_classes: usize,
    pub dropout_prob: f64,
}

impl LabelEmbedder {
    /// Replaces the labels where `drop` is true by the null label `num_classes`.
    pub fn token_drop(&self, labels: Tensor<1, Int>, drop: Tensor<1, Bool>) -> Tensor<1, Int> {
        let null = labels.zeros_like() + self.num_classes as i64;
        labels.mask_where(drop, null)
    }

    /// y: [N] -> [N, D]. No dropout here: training code applies [`Self::token_drop`] first.
    pub fn forward(&self, labels: Tensor<1, Int>) -> Tensor<2> {
        self.embedding_table.weight.val().select(0, labels)
    }
}

/// Multi-head self-attention with Difffit scales: `gamma1` [3D] on the qkv output, `gamma2` [D]
/// on the projection output.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    pub gamma1: Option<Param<Tensor<1>>>,
    pub gamma2: Option<Param<Tensor<1>>>,
    pub num_heads: usize,
}

impl Attention {
    /// [N, T, D] -> [N, T, D].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [n, t, d] = x.dims();
        let h = self.num_heads;
        let mut qkv = linear(&self.qkv, x); // [N, T, 3D]
        if let Some(g) = &self.gamma1 {
            let dtype = qkv.dtype();
            qkv = qkv * in_dtype(g, dtype).unsqueeze_dims::<3>(&[0, 1]);
        }
        // [N, T, 3, H, D/H] -> [3, N, H, T, D/H]
        let qkv = qkv.reshape([n, t, 3, h, d / h]).permute([2, 0, 3, 1, 4]);
        let q = qkv.clone().narrow(0, 0, 1).squeeze_dim::<4>(0);
        let k = qkv.clone().narrow(0, 1, 1).squeeze_dim::<4>(0);
        let v = qkv.narrow(0, 2, 1).squeeze_dim::<4>(0);
        let o = scaled_dot_product_attention(q, k, v); // [N, H, T, D/H]
        let o = o.swap_dims(1, 2).reshape([n, t, d]);
        let mut out = linear(&self.proj, o);
        if let Some(g) = &self.gamma2 {
            let dtype = out.dtype();
            out = out * in_dtype(g, dtype).unsqueeze_dims::<3>(&[0, 1]);
        }
        out
    }
}

/// How inference attention is launched (training always takes the explicit formula, which is
/// what burn's attention decomposes into under autodiff anyway).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionKernel {
    /// [`AttentionKernel::PadHeadDim`] on GPU backends when the head dimension is not a multiple
    /// of 16, [`AttentionKernel::Direct`] otherwise (Flex, the CPU backend, has no such limit).
    #[default]
    Auto,
    /// burn's `attention` on q, k, v as they are. On CubeCL backends its flash kernels tile the
    /// head dimension by the tensor-core instruction's k (16), so DiT-XL/2's 72 falls back to
    /// about ten unfused kernels over the [N*H, T, T] scores.
    Direct,
    /// Zero-pad q, k, v to the next multiple of 16 (72 -> 80) with q pre-scaled by
    /// sqrt(d_pad / d), so the kernel's default 1/sqrt(d_pad) scale gives the model's 1/sqrt(d);
    /// the zero columns add nothing to q.k and the padded output columns are dropped.
    PadHeadDim,
}

static ATTENTION_KERNEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl AttentionKernel {
    /// Chooses the kernel for every later inference attention of this process.
    pub fn set(self) {
        ATTENTION_KERNEL.store(self as u8, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn current() -> Self {
        match ATTENTION_KERNEL.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Self::Direct,
            2 => Self::PadHeadDim,
            _ => Self::Auto,
        }
    }
}

/// Whether `device` runs CubeCL kernels (only CubeCL devices report an identity).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn is_cubecl(device: &Device) -> bool {
    device.identity().is_some()
}

/// Builds without a GPU backend have no CubeCL device.
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
fn is_cubecl(_device: &Device) -> bool {
    false
}

/// softmax(q k^T / sqrt(d)) v on [N, H, T, d].
///
/// burn's fused `attention` is used for inference (launched as [`AttentionKernel::current`]
/// says); under autodiff it takes the unfused path anyway, so the explicit formula is used there
/// (identical numerics, differentiable).
pub fn scaled_dot_product_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    attention_with(q, k, v, AttentionKernel::current())
}

/// [`scaled_dot_product_attention`] launched as `kernel` says (inference only).
pub fn attention_with(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, kernel: AttentionKernel) -> Tensor<4> {
    if q.device().is_autodiff() {
        let scale = (q.dims()[3] as f64).powf(-0.5);
        let attn = softmax(q.matmul(k.swap_dims(2, 3)) * scale, 3);
        return attn.matmul(v);
    }
    let d = q.dims()[3];
    let pad = match kernel {
        AttentionKernel::Direct => false,
        AttentionKernel::PadHeadDim => true,
        AttentionKernel::Auto => d % 16 != 0 && is_cubecl(&q.device()),
    };
    let padded = d.next_multiple_of(16);
    if !pad || padded == d {
        return burn::tensor::module::attention(q, k, v, None, None, Default::default());
    }
    let widen = |t: Tensor<4>| t.pad([(0, padded - d)], burn::tensor::ops::PadMode::Constant(0.0));
    let q = widen(q * (padded as f64 / d as f64).sqrt());
    let (k, v) = (widen(k), widen(v));
    burn::tensor::module::attention(q, k, v, None, None, Default::default()).narrow(3, 0, d)
}

/// timm `Mlp`: fc1, GELU(tanh), fc2.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear(&self.fc2, gelu_tanh(linear(&self.fc1, x)))
    }
}

/// A DiT block with adaLN-Zero conditioning and the block-level Difffit scales `gamma1`,
/// `gamma2` [D] (present in blocks `0..gamma_blocks`).
#[derive(Module, Debug)]
pub struct DiTBlock {
    pub attn: Attention,
    pub mlp: Mlp,
    /// `adaLN_modulation = [SiLU, Linear(D, 6D)]`; this is the Linear (`adaLN_modulation.1`).
    pub ada_ln_modulation: Linear,
    pub gamma1: Option<Param<Tensor<1>>>,
    pub gamma2: Option<Param<Tensor<1>>>,
}

fn scale_by(x: Tensor<3>, gamma: &Option<Param<Tensor<1>>>) -> Tensor<3> {
    match gamma {
        Some(g) => {
            let dtype = x.dtype();
            x * in_dtype(g, dtype).unsqueeze_dims::<3>(&[0, 1])
        }
        None => x,
    }
}

impl DiTBlock {
    /// x: [N, T, D], c: [N, D] -> [N, T, D].
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>) -> Tensor<3> {
        let m = linear(&self.ada_ln_modulation, silu(c)).chunk(6, 1);
        let [shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp]: [Tensor<2>; 6] =
            m.try_into().expect("adaLN gives 6 chunks");
        let h = self.attn.forward(modulate(layer_norm_no_affine(x.clone()), shift_msa, scale_msa));
        let x = x + scale_by(gate_msa.unsqueeze_dim::<3>(1) * h, &self.gamma1);
        let h = self.mlp.forward(modulate(layer_norm_no_affine(x.clone()), shift_mlp, scale_mlp));
        x + scale_by(gate_mlp.unsqueeze_dim::<3>(1) * h, &self.gamma2)
    }
}

/// Final adaLN (shift, scale) + linear to p*p*C_out per token.
#[derive(Module, Debug)]
pub struct FinalLayer {
    pub linear: Linear,
    pub ada_ln_modulation: Linear,
}

impl FinalLayer {
    /// x: [N, T, D], c: [N, D] -> [N, T, p*p*C_out].
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>) -> Tensor<3> {
        let m = linear(&self.ada_ln_modulation, silu(c)).chunk(2, 1);
        let [shift, scale]: [Tensor<2>; 2] = m.try_into().expect("adaLN gives 2 chunks");
        linear(&self.linear, modulate(layer_norm_no_affine(x), shift, scale))
    }
}

/// Diffusion Transformer.
#[derive(Module, Debug)]
pub struct DiT {
    pub x_embedder: PatchEmbed,
    pub t_embedder: TimestepEmbedder,
    pub y_embedder: LabelEmbedder,
    /// Fixed 2-D sin-cos position embedding [1, T, D] (a frozen parameter in the reference, and
    /// stored in its checkpoints).
    pub pos_embed: Param<Tensor<3>>,
    pub blocks: Vec<DiTBlock>,
    pub final_layer: FinalLayer,
    pub in_channels: usize,
    pub out_channels: usize,
    pub patch_size: usize,
}

impl DiT {
    /// Eval-mode forward (no label dropout). x: [N, C, H, W], t: [N], y: [N] -> [N, C_out, H, W].
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, y: Tensor<1, Int>) -> Tensor<4> {
        let y = self.y_embedder.forward(y); // [N, D]
        self.forward_embedded(x, t, y)
    }

    /// Train-mode forward: labels where `drop` is true are replaced by the null label first
    /// (the reference's `token_drop`, drawn by the caller so that it is seeded and reproducible).
    pub fn forward_with_label_drop(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        y: Tensor<1, Int>,
        drop: Tensor<1, Bool>,
    ) -> Tensor<4> {
        let y = self.y_embedder.token_drop(y, drop);
        self.forward(x, t, y)
    }

    fn forward_embedded(&self, x: Tensor<4>, t: Tensor<1>, y: Tensor<2>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let io_dtype = x.dtype();
        let x = self.x_embedder.forward(x); // [N, T, D], in the weights' dtype
        let dtype = x.dtype();
        let x = x + in_dtype(&self.pos_embed, dtype);
        let t = self.t_embedder.forward(t);
        let c = t.clone() + y.cast(FloatDType::from(t.dtype())); // [N, D]
        let mut x = x;
        for block in &self.blocks {
            x = block.forward(x, c.clone()); // [N, T, D]
        }
        let x = self.final_layer.forward(x, c); // [N, T, p*p*C_out]
        self.unpatchify(x, h / self.patch_size, w / self.patch_size).cast(io_dtype) // [N, C_out, H, W]
    }

    /// The dtype the network computes in: that of its weights.
    pub fn dtype(&self) -> FloatDType {
        self.pos_embed.val().dtype().into()
    }

    /// Every weight cast to `dtype` (f32 -> bf16 for fast sampling; f32 stays the default and
    /// the parity reference). Inputs and outputs keep the caller's dtype.
    pub fn to_dtype(self, dtype: FloatDType) -> Self {
        self.cast_params(dtype, false)
    }

    /// The parameters that are not trained (no `require_grad`) cast to `dtype`, the trained ones
    /// left as they are: mixed-precision fine-tuning's bf16 frozen weights beside f32 trained
    /// parameters.
    pub fn to_dtype_frozen(self, dtype: FloatDType) -> Self {
        self.cast_params(dtype, true)
    }

    fn cast_params(self, dtype: FloatDType, frozen_only: bool) -> Self {
        struct Cast(FloatDType, bool);
        impl burn::module::ModuleMapper for Cast {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let (dtype, frozen_only) = (self.0, self.1);
                param.map(move |t| if frozen_only && t.is_require_grad() { t } else { t.cast(dtype) })
            }
        }
        self.map(&mut Cast(dtype, frozen_only))
    }

    /// [N, T, p*p*C] -> [N, C, h*p, w*p], i.e. `nhwpqc -> nchpwq`.
    pub fn unpatchify(&self, x: Tensor<3>, h: usize, w: usize) -> Tensor<4> {
        let [n, t, _] = x.dims();
        let (p, c) = (self.patch_size, self.out_channels);
        assert_eq!(h * w, t, "token count does not match the patch grid");
        x.reshape([n, h, w, p, p, c])
            .permute([0, 5, 1, 3, 2, 4]) // n c h p w q
            .reshape([n, c, h * p, w * p])
    }

    /// Classifier-free guidance as `forward_with_cfg` of the reference: the batch is
    /// [cond half; uncond half], the first half of `x` is used for both, and
    /// `eps = uncond + scale (cond - uncond)` is written into both halves.
    pub fn forward_with_cfg(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        y: Tensor<1, Int>,
        cfg_scale: f64,
        channels: CfgChannels,
    ) -> Tensor<4> {
        let [n, _, _, _] = x.dims();
        let half = x.narrow(0, 0, n / 2);
        let combined = Tensor::cat(vec![half.clone(), half], 0);
        let out = self.forward(combined, t, y); // [N, C_out, H, W]
        let c_out = out.dims()[1];
        let k = match channels {
            CfgChannels::FirstThree => 3.min(c_out),
            CfgChannels::AllEps => self.in_channels,
        };
        let eps = out.clone().narrow(1, 0, k);
        let rest = out.narrow(1, k, c_out - k);
        let cond = eps.clone().narrow(0, 0, n / 2);
        let uncond = eps.narrow(0, n / 2, n / 2);
        let half_eps = uncond.clone() + (cond - uncond) * cfg_scale;
        let eps = Tensor::cat(vec![half_eps.clone(), half_eps], 0);
        Tensor::cat(vec![eps, rest], 1)
    }

    /// The network as the reference's CFG sampler calls it: `x` is `[z; z]` (2B latents), the
    /// labels are `[y; null]`, and `forward_with_cfg` is applied at every step. Usable directly
    /// as an `ims3_diffusion::Denoiser`.
    pub fn cfg_denoiser(
        &self,
        labels: Tensor<1, Int>,
        cfg_scale: f64,
        channels: CfgChannels,
    ) -> impl Fn(Tensor<4>, Tensor<1>) -> Tensor<4> + '_ {
        let null = labels.zeros_like() + self.y_embedder.num_classes as i64;
        let y = Tensor::cat(vec![labels, null], 0);
        move |x: Tensor<4>, t: Tensor<1>| self.forward_with_cfg(x, t, y.clone(), cfg_scale, channels)
    }
}

/// MAE's 2-D sin-cos position embedding for a `grid x grid` patch grid: [grid*grid, dim].
/// The first half of the channels encodes the row (h), the second the column (w); within each,
/// `[sin(pos w_k), cos(pos w_k)]` with `w_k = 1 / 10000^(2k/(dim/2))`. Computed in f64.
pub fn sincos_pos_embed_2d(dim: usize, grid: usize) -> Vec<f64> {
    assert!(dim.is_multiple_of(4), "pos_embed dim must be a multiple of 4");
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / (dim as f64 / 4.0)))
        .collect();
    let mut out = Vec::with_capacity(grid * grid * dim);
    for i in 0..grid {
        for j in 0..grid {
            // numpy meshgrid(w, h): grid[0] varies along columns (w = j), grid[1] along rows;
            // emb_h is built from grid[0], so the first half encodes j, the second i.
            for pos in [j as f64, i as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin()));
                out.extend(omega.iter().map(|w| (pos * w).cos()));
            }
        }
    }
    out
}

impl DiTConfig {
    /// Builds a model with the reference initialisation (xavier-uniform linears, zero biases,
    /// N(0, 0.02) label table and timestep MLP, zeroed adaLN and output layers, gammas 1,
    /// sin-cos `pos_embed`).
    pub fn init(&self, device: &Device) -> DiT {
        use burn::nn::Initializer;
        let d = self.hidden_size;
        let xavier = Initializer::XavierUniform { gain: 1.0 };
        let zeros = Initializer::Zeros;
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        let linear = |i: usize, o: usize, init: &Initializer| {
            let mut l = LinearConfig::new(i, o).with_initializer(init.clone()).init(device);
            if let Some(b) = l.bias.take() {
                l.bias = Some(Param::from_tensor(b.val().zeros_like()));
            }
            l
        };
        let p = self.patch_size;
        let grid = self.input_size / p;
        let mut proj = Conv2dConfig::new([self.in_channels, d], [p, p])
            .with_stride([p, p])
            .with_initializer(xavier.clone())
            .init(device);
        // Patch embed initialised like a Linear on the flattened kernel (fan_in = C p p, fan_out = D).
        let fan_in = self.in_channels * p * p;
        let bound = (6.0 / (fan_in + d) as f64).sqrt();
        proj.weight = Param::from_tensor(Tensor::random(
            [d, self.in_channels, p, p],
            burn::tensor::Distribution::Uniform(-bound, bound),
            device,
        ));
        if let Some(b) = proj.bias.take() {
            proj.bias = Some(Param::from_tensor(b.val().zeros_like()));
        }
        let ones = |n: usize| Some(Param::from_tensor(Tensor::<1>::ones([n], device)));
        let blocks = (0..self.depth)
            .map(|i| {
                let g = i < self.gamma_blocks;
                DiTBlock {
                    attn: Attention {
                        qkv: linear(d, 3 * d, &xavier),
                        proj: linear(d, d, &xavier),
                        gamma1: if g { ones(3 * d) } else { None },
                        gamma2: if g { ones(d) } else { None },
                        num_heads: self.num_heads,
                    },
                    mlp: Mlp {
                        fc1: linear(d, self.mlp_hidden(), &xavier),
                        fc2: linear(self.mlp_hidden(), d, &xavier),
                    },
                    ada_ln_modulation: linear(d, 6 * d, &zeros),
                    gamma1: if g { ones(d) } else { None },
                    gamma2: if g { ones(d) } else { None },
                }
            })
            .collect();
        let pos = sincos_pos_embed_2d(d, grid);
        let pos: Vec<f32> = pos.into_iter().map(|v| v as f32).collect();
        let pos_embed = Tensor::<1>::from_floats(pos.as_slice(), device).reshape([1, grid * grid, d]);
        DiT {
            x_embedder: PatchEmbed { proj },
            t_embedder: TimestepEmbedder {
                mlp_0: linear(256, d, &normal),
                mlp_2: linear(d, d, &normal),
                frequency_embedding_size: 256,
            },
            y_embedder: LabelEmbedder {
                embedding_table: burn::nn::EmbeddingConfig::new(self.label_rows(), d)
                    .with_initializer(normal.clone())
                    .init(device),
                num_classes: self.num_classes,
                dropout_prob: self.class_dropout_prob,
            },
            pos_embed: Param::from_tensor(pos_embed),
            blocks,
            final_layer: FinalLayer {
                linear: linear(d, p * p * self.out_channels(), &zeros),
                ada_ln_modulation: linear(d, 2 * d, &zeros),
            },
            in_channels: self.in_channels,
            out_channels: self.out_channels(),
            patch_size: p,
        }
    }
}
