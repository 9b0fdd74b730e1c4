//! torchvision `resnet18` (BasicBlock x [2, 2, 2, 2]), eval mode. Field names mirror the
//! torchvision state-dict keys; `downsample.0/1` become `downsample.conv/bn`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use ims3_weights::{Checkpoint, KeyMap, WeightsError, compare_shapes};

fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).with_epsilon(1e-5).init(device)
}

/// `downsample = Sequential(conv1x1(stride), BatchNorm)`.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub downsample: Option<Downsample>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || cin != cout)
            .then(|| Downsample { conv: conv(cin, cout, 1, stride, 0, device), bn: bn(cout, device) });
        Self {
            conv1: conv(cin, cout, 3, stride, 1, device),
            bn1: bn(cout, device),
            conv2: conv(cout, cout, 3, 1, 1, device),
            bn2: bn(cout, device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let out = relu(self.bn1.forward(self.conv1.forward(x)));
        let out = self.bn2.forward(self.conv2.forward(out));
        relu(out + identity)
    }
}

/// torchvision ResNet-18.
#[derive(Module, Debug)]
pub struct ResNet18 {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<BasicBlock>,
    pub layer2: Vec<BasicBlock>,
    pub layer3: Vec<BasicBlock>,
    pub layer4: Vec<BasicBlock>,
    pub fc: Linear,
}

impl ResNet18 {
    pub fn new(num_classes: usize, device: &Device) -> Self {
        let stage = |cin: usize, cout: usize, stride: usize| {
            vec![BasicBlock::new(cin, cout, stride, device), BasicBlock::new(cout, cout, 1, device)]
        };
        Self {
            conv1: conv(3, 64, 7, 2, 3, device),
            bn1: bn(64, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: stage(64, 64, 1),
            layer2: stage(64, 128, 2),
            layer3: stage(128, 256, 2),
            layer4: stage(256, 512, 2),
            fc: LinearConfig::new(512, num_classes).init(device),
        }
    }

    /// Penultimate features (`fc = Identity`): [N, 3, H, W] (normalised) -> [N, 512].
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.maxpool.forward(relu(self.bn1.forward(self.conv1.forward(x))));
        let mut x = x;
        for block in self.layer1.iter().chain(&self.layer2).chain(&self.layer3).chain(&self.layer4) {
            x = block.forward(x);
        }
        let [n, c, _, _] = x.dims();
        x.mean_dims(&[2, 3]).reshape([n, c]) // adaptive average pool to 1x1
    }

    /// Class logits: [N, 3, H, W] -> [N, num_classes].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }
}

fn key_map() -> KeyMap {
    KeyMap::new(
        &[(r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.1\.", ".downsample.bn.")],
        &[(r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.bn\.", ".downsample.1.")],
    )
}

/// Every tensor of torchvision's `resnet18` state dict with its shape (`num_batches_tracked`
/// excluded: it is read and ignored).
pub fn expected_shapes(num_classes: usize) -> BTreeMap<String, Vec<usize>> {
    let mut m = BTreeMap::new();
    let bn = |m: &mut BTreeMap<String, Vec<usize>>, p: &str, c: usize| {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            m.insert(format!("{p}.{s}"), vec![c]);
        }
    };
    m.insert("conv1.weight".into(), vec![64, 3, 7, 7]);
    bn(&mut m, "bn1", 64);
    let mut cin = 64;
    for (l, cout) in [(1, 64), (2, 128), (3, 256), (4, 512)] {
        for b in 0..2 {
            let p = format!("layer{l}.{b}");
            let ci = if b == 0 { cin } else { cout };
            m.insert(format!("{p}.conv1.weight"), vec![cout, ci, 3, 3]);
            bn(&mut m, &format!("{p}.bn1"), cout);
            m.insert(format!("{p}.conv2.weight"), vec![cout, cout, 3, 3]);
            bn(&mut m, &format!("{p}.bn2"), cout);
            if b == 0 && l > 1 {
                m.insert(format!("{p}.downsample.0.weight"), vec![cout, ci, 1, 1]);
                bn(&mut m, &format!("{p}.downsample.1"), cout);
            }
        }
        cin = cout;
    }
    m.insert("fc.weight".into(), vec![num_classes, 512]);
    m.insert("fc.bias".into(), vec![num_classes]);
    m
}

/// Loads torchvision's `resnet18` `.pth` (e.g. `resnet18-f37072fd.pth`, IMAGENET1K_V1).
pub fn load_resnet18(path: impl AsRef<Path>, device: &Device) -> Result<ResNet18, WeightsError> {
    let ckpt = Checkpoint::open(path.as_ref(), None)?;
    let num_classes = ckpt.shape("fc.weight").map_or(1000, |s| s[0]);
    let mut report = compare_shapes(&ckpt, &expected_shapes(num_classes), |_| false);
    report.unused.retain(|k| !k.ends_with("num_batches_tracked"));
    report.ensure_fits(&ckpt, "torchvision resnet18")?;
    let mut model = ResNet18::new(num_classes, device);
    let left = ims3_weights::load_into(&mut model, &ckpt, &key_map())?;
    ims3_weights::ensure_all_loaded(&left, &ckpt, "torchvision resnet18")?;
    Ok(model)
}
