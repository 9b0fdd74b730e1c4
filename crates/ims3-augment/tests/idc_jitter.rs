//! IDC's tensor ColorJitter against the NumPy oracle `idc_jitter_reference.py` (written from the
//! reference's formulas, float32, fixed factors and orders; its output is kept in
//! `data/idc_jitter.json`).
//!
//! Tolerance 1e-6 absolute: values stay within [-0.5, 1.5]; each op is one or two float32
//! roundings per value (about 6e-8 at 1.0), three ops at the most, and the contrast mean is
//! summed in f64 here and in float32 by NumPy (pairwise), which differ by a few ulps.

use ims3_augment::jitter::{JitterOp, idc_color_jitter};

#[test]
fn matches_the_numpy_oracle() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/idc_jitter.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |x: &serde_json::Value| -> Vec<f32> { x.as_array().unwrap().iter().map(|f| f.as_f64().unwrap() as f32).collect() };
    let image = floats(&v["image"]);
    let n = image.len() / 3;
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let ops: Vec<(JitterOp, f32)> = case["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let op = match o[0].as_str().unwrap() {
                    "brightness" => JitterOp::Brightness,
                    "contrast" => JitterOp::Contrast,
                    "saturation" => JitterOp::Saturation,
                    other => panic!("{other}"),
                };
                (op, o[1].as_f64().unwrap() as f32)
            })
            .collect();
        let mut x = image.clone();
        idc_color_jitter(&mut x, n, &ops);
        let want = floats(&case["expected"]);
        let err = x.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-6, "{ops:?}: max abs error {err}");
        // Not clipped: a negative contrast factor pushes values past 1 (or below 0) unchanged.
    }
    // Brightness alone is an exact scale: x (1 - a) up to one rounding.
    let mut x = image.clone();
    idc_color_jitter(&mut x, n, &[(JitterOp::Brightness, 0.25)]);
    assert!(x.iter().zip(&image).all(|(a, b)| (a - b * 0.75).abs() < 1e-7));
}
