//! diffusers `AutoencoderKL`: field names mirror the checkpoint keys
//! (`encoder.down_blocks.0.resnets.1.norm2`, `decoder.mid_block.attentions.0.to_q`, ...).
//! Shapes: N = batch, C = channels, H/W = spatial size.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::ops::PadMode;
use ims3_nets::conv3x3::conv2d;

use crate::config::VaeConfig;

fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

fn norm(groups: usize, c: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, c).with_epsilon(1e-6).init(device)
}

/// `ResnetBlock2D`: GN, SiLU, conv, GN, SiLU, conv, plus a 1x1 shortcut when C changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    fn new(cin: usize, cout: usize, groups: usize, device: &Device) -> Self {
        Self {
            norm1: norm(groups, cin, device),
            conv1: conv(cin, cout, 3, 1, 1, device),
            norm2: norm(groups, cout, device),
            conv2: conv(cout, cout, 3, 1, 1, device),
            conv_shortcut: (cin != cout).then(|| conv(cin, cout, 1, 1, 0, device)),
        }
    }

    /// [N, C_in, H, W] -> [N, C_out, H, W].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = conv2d(&self.conv1, silu(self.norm1.forward(x.clone())));
        let h = conv2d(&self.conv2, silu(self.norm2.forward(h)));
        let shortcut = match &self.conv_shortcut {
            Some(c) => conv2d(c, x),
            None => x,
        };
        shortcut + h
    }
}

/// Single-head spatial self-attention of the mid block (`Attention` with heads = 1).
#[derive(Module, Debug)]
pub struct Attention {
    pub group_norm: GroupNorm,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    /// `to_out.0` (`to_out.1` is dropout).
    pub to_out: Vec<Linear>,
}

impl Attention {
    fn new(c: usize, groups: usize, device: &Device) -> Self {
        let lin = || LinearConfig::new(c, c).init(device);
        Self { group_norm: norm(groups, c, device), to_q: lin(), to_k: lin(), to_v: lin(), to_out: vec![lin()] }
    }

    /// [N, C, H, W] -> [N, C, H, W], residual included.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let t = self.group_norm.forward(x.clone()).reshape([n, c, h * w]).swap_dims(1, 2); // [N, HW, C]
        let q = self.to_q.forward(t.clone());
        let k = self.to_k.forward(t.clone());
        let v = self.to_v.forward(t);
        let attn = softmax(q.matmul(k.swap_dims(1, 2)) / (c as f64).sqrt(), 2); // [N, HW, HW]
        let o = self.to_out[0].forward(attn.matmul(v)); // [N, HW, C]
        o.swap_dims(1, 2).reshape([n, c, h, w]) + x
    }
}

/// `Downsample2D`: pad right and bottom by one, 3x3 conv with stride 2.
#[derive(Module, Debug)]
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(&self.conv, x.pad((0, 1, 0, 1), PadMode::Constant(0.0)))
    }
}

/// `Upsample2D`: nearest 2x, then a 3x3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let up = x.reshape([n, c, h, 1, w, 1]).expand([n, c, h, 2, w, 2]).reshape([n, c, 2 * h, 2 * w]);
        conv2d(&self.conv, up)
    }
}

#[derive(Module, Debug)]
pub struct DownEncoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsamplers: Vec<Downsample2D>,
}

#[derive(Module, Debug)]
pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsamplers: Vec<Upsample2D>,
}

/// `UNetMidBlock2D`: resnet, attention, resnet.
#[derive(Module, Debug)]
pub struct MidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
}

impl MidBlock {
    fn new(c: usize, groups: usize, attention: bool, device: &Device) -> Self {
        Self {
            resnets: vec![ResnetBlock2D::new(c, c, groups, device), ResnetBlock2D::new(c, c, groups, device)],
            attentions: if attention { vec![Attention::new(c, groups, device)] } else { vec![] },
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x);
        if let Some(a) = self.attentions.first() {
            x = a.forward(x);
        }
        self.resnets[1].forward(x)
    }
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock2D>,
    pub mid_block: MidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    /// [N, 3, H, W] in [-1, 1] -> [N, 2 * latent, H/f, W/f] (mean and log-variance).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = conv2d(&self.conv_in, x);
        for block in &self.down_blocks {
            for r in &block.resnets {
                x = r.forward(x);
            }
            for d in &block.downsamplers {
                x = d.forward(x);
            }
        }
        let x = self.mid_block.forward(x);
        conv2d(&self.conv_out, silu(self.conv_norm_out.forward(x)))
    }
}

#[derive(Module, Debug)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    /// [N, latent, h, w] -> [N, 3, h f, w f].
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut x = self.mid_block.forward(conv2d(&self.conv_in, z));
        for block in &self.up_blocks {
            for r in &block.resnets {
                x = r.forward(x);
            }
            for u in &block.upsamplers {
                x = u.forward(x);
            }
        }
        conv2d(&self.conv_out, silu(self.conv_norm_out.forward(x)))
    }
}

/// The diagonal Gaussian posterior `q(z | x)`.
#[derive(Clone, Debug)]
pub struct Posterior {
    pub mean: Tensor<4>,
    pub std: Tensor<4>,
}

impl Posterior {
    /// `mean + std * noise` (the reference fine-tunes on samples, not the mean).
    pub fn sample(&self, noise: Tensor<4>) -> Tensor<4> {
        self.mean.clone() + self.std.clone() * noise
    }
}

#[derive(Module, Debug)]
pub struct AutoencoderKL {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
    pub scaling_factor: f64,
}

impl AutoencoderKL {
    /// Encodes images in [-1, 1] to the posterior (logvar clamped to [-30, 20], as diffusers).
    pub fn encode(&self, x: Tensor<4>) -> Posterior {
        let mut moments = self.encoder.forward(x);
        if let Some(q) = &self.quant_conv {
            moments = conv2d(q, moments);
        }
        let c = moments.dims()[1] / 2;
        let mean = moments.clone().narrow(1, 0, c);
        let logvar = moments.narrow(1, c, c).clamp(-30.0, 20.0);
        Posterior { mean, std: (logvar * 0.5).exp() }
    }

    /// Decodes unscaled latents to images (nominally [-1, 1], not clamped).
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let z = match &self.post_quant_conv {
            Some(p) => conv2d(p, z),
            None => z,
        };
        self.decoder.forward(z)
    }

    /// Decodes DiT latents (scaled by `scaling_factor`) to host images in [-1, 1] (not
    /// clamped, as S3 encodes them), `batch` at a time so memory is bounded by the batch;
    /// a one-channel decoder's grey plane is repeated into the three.
    pub fn decode_to_images(&self, z: Tensor<4>, batch: usize, show_progress: bool) -> Vec<ims3_images::Rgb> {
        let [n, _, _, _] = z.dims();
        let pb = ims3_util::progress_bar(n as u64, "vae-decode", show_progress);
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = batch.max(1).min(n - start);
            let x = self.decode(self.from_dit_latent(z.clone().narrow(0, start, len)));
            let [_, c, h, w] = x.dims();
            let v: Vec<f32> = x.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
            for img in v.chunks(c * h * w) {
                // A one-channel VAE (the Fashion-MNIST stand-in) gives grey: the plane repeated.
                out.push(ims3_images::Rgb::new(w, h, if c == 1 { [img, img, img].concat() } else { img.to_vec() }));
            }
            pb.inc(len as u64);
            start += len;
        }
        pb.finish_and_clear();
        out
    }

    /// Latent as DiT sees it: `z * scaling_factor` (0.18215).
    pub fn to_dit_latent(&self, z: Tensor<4>) -> Tensor<4> {
        z * self.scaling_factor
    }

    /// Back from DiT's latent space: `z / scaling_factor`.
    pub fn from_dit_latent(&self, z: Tensor<4>) -> Tensor<4> {
        z / self.scaling_factor
    }
}

impl VaeConfig {
    pub fn init(&self, device: &Device) -> AutoencoderKL {
        let g = self.norm_num_groups;
        let boc = &self.block_out_channels;
        let last = *boc.last().expect("validated");
        let down_blocks = boc
            .iter()
            .enumerate()
            .map(|(i, &cout)| {
                let cin = if i == 0 { boc[0] } else { boc[i - 1] };
                DownEncoderBlock2D {
                    resnets: (0..self.layers_per_block)
                        .map(|k| ResnetBlock2D::new(if k == 0 { cin } else { cout }, cout, g, device))
                        .collect(),
                    downsamplers: if i + 1 < boc.len() { vec![Downsample2D { conv: conv(cout, cout, 3, 2, 0, device) }] } else { vec![] },
                }
            })
            .collect();
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let up_blocks = rev
            .iter()
            .enumerate()
            .map(|(i, &cout)| {
                let cin = if i == 0 { rev[0] } else { rev[i - 1] };
                UpDecoderBlock2D {
                    resnets: (0..=self.layers_per_block)
                        .map(|k| ResnetBlock2D::new(if k == 0 { cin } else { cout }, cout, g, device))
                        .collect(),
                    upsamplers: if i + 1 < rev.len() { vec![Upsample2D { conv: conv(cout, cout, 3, 1, 1, device) }] } else { vec![] },
                }
            })
            .collect();
        let lat = self.latent_channels;
        AutoencoderKL {
            encoder: Encoder {
                conv_in: conv(self.in_channels, boc[0], 3, 1, 1, device),
                down_blocks,
                mid_block: MidBlock::new(last, g, self.mid_block_add_attention, device),
                conv_norm_out: norm(g, last, device),
                conv_out: conv(last, 2 * lat, 3, 1, 1, device),
            },
            decoder: Decoder {
                conv_in: conv(lat, last, 3, 1, 1, device),
                mid_block: MidBlock::new(last, g, self.mid_block_add_attention, device),
                up_blocks,
                conv_norm_out: norm(g, boc[0], device),
                conv_out: conv(boc[0], self.out_channels, 3, 1, 1, device),
            },
            quant_conv: self.use_quant_conv.then(|| conv(2 * lat, 2 * lat, 1, 1, 0, device)),
            post_quant_conv: self.use_post_quant_conv.then(|| conv(lat, lat, 1, 1, 0, device)),
            scaling_factor: self.scaling_factor,
        }
    }
}
