//! Every PIL operation of the augmentations against Pillow's own output (pil_ops.json, written
//! by gen_pil_ops.py beside this file with Pillow 13.0.0): bit-exact.

use ims3_augment::ops::{self, Op};
use ims3_images::pil::{Filter, Rgb8, resize};

fn image(v: &serde_json::Value) -> Rgb8 {
    Rgb8 {
        width: v["width"].as_u64().unwrap() as usize,
        height: v["height"].as_u64().unwrap() as usize,
        data: v["data"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect(),
    }
}

#[test]
fn ops_match_pillow_bit_for_bit() {
    let j: serde_json::Value = serde_json::from_str(include_str!("pil_ops.json")).unwrap();
    let input = Rgb8 {
        width: j["width"].as_u64().unwrap() as usize,
        height: j["height"].as_u64().unwrap() as usize,
        data: j["input"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect(),
    };
    let cases: Vec<(&str, Rgb8)> = vec![
        ("brightness_1.18", Op::Brightness(0.18).apply(&input)),
        ("contrast_0.82", Op::Contrast(-0.18).apply(&input)),
        ("color_1.18", Op::Color(0.18).apply(&input)),
        ("sharpness_0.82", Op::Sharpness(-0.18).apply(&input)),
        ("sharpness_1.18", Op::Sharpness(0.18).apply(&input)),
        ("autocontrast", Op::AutoContrast.apply(&input)),
        ("equalize", Op::Equalize.apply(&input)),
        ("posterize_7", Op::Posterize(7).apply(&input)),
        ("solarize_204", Op::Solarize(204.0).apply(&input)),
        ("rotate_6", Op::Rotate(6.0).apply(&input)),
        ("rotate_-6", Op::Rotate(-6.0).apply(&input)),
        ("shearx_0.06", Op::ShearX(0.06).apply(&input)),
        ("sheary_-0.06", Op::ShearY(-0.06).apply(&input)),
        ("translatex_2", Op::TranslateX(2.0).apply(&input)),
        ("translatey_-3", Op::TranslateY(-3.0).apply(&input)),
        ("resize_bilinear_5x4", resize(&input, 5, 4, Filter::Bilinear)),
        ("resize_bilinear_13x11", resize(&input, 13, 11, Filter::Bilinear)),
    ];
    let mut failures = Vec::new();
    for (name, ours) in cases {
        let want = image(&j[name]);
        if ours != want {
            let diff = ours.data.iter().zip(&want.data).filter(|(a, b)| a != b).count();
            failures.push(format!("{name}: {diff} of {} values differ", want.data.len()));
        }
    }
    let _ = ops::luma(0, 0, 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
