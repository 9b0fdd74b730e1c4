//! Resampling against known values: PIL's antialiased bicubic (from `pil_reference.py`,
//! pasted below) and hand-computed bilinear / centre-crop cases.

#![allow(clippy::excessive_precision)] // values pasted verbatim from pil_reference.py

use ims3_images::{Rgb, center_crop, resize_bicubic_aa, resize_bilinear};

/// The 9x7 pattern of pil_reference.py in all three channels.
fn pattern() -> Rgb {
    let (w, h) = (9, 7);
    let plane: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| ((0.7 * x as f64 + 0.3 * y as f64).sin() + 0.05 * (x * y) as f64) as f32))
        .collect();
    Rgb::new(w, h, [plane.clone(), plane.clone(), plane].concat())
}

fn check(out_w: usize, out_h: usize, want: &[f32]) {
    let got = resize_bicubic_aa(&pattern(), out_h, out_w);
    assert_eq!((got.width, got.height), (out_w, out_h));
    for c in 0..3 {
        for (i, w) in want.iter().enumerate() {
            let g = got.data[c * out_w * out_h + i];
            assert!((g - w).abs() < 2e-6, "{out_w}x{out_h} channel {c} index {i}: {g} vs PIL {w}");
        }
    }
}

#[test]
fn bicubic_aa_matches_pil_4x5() {
    check(4, 5, &[5.2324992e-01, 8.3322549e-01, -3.9658535e-01, -7.5250173e-01, 8.2862926e-01, 7.8649670e-01, -3.2531160e-01, -4.6430845e-02, 1.0225905e+00, 6.3850975e-01, -1.2043460e-01, 8.2298297e-01, 1.0449220e+00, 4.5057845e-01, 2.5149658e-01, 1.7436926e+00, 9.2098278e-01, 3.0393192e-01, 7.4064285e-01, 2.5780766e+00]);
}

#[test]
fn bicubic_aa_matches_pil_15x12() {
    check(15, 12, &[-7.1877554e-02, 1.8852891e-01, 6.2499583e-01, 8.8386458e-01, 9.9123591e-01, 9.2218757e-01, 6.9438839e-01, 3.4224978e-01, -7.6167293e-02, -4.7371444e-01, -8.0778700e-01, -9.9052781e-01, -1.0173584e+00, -8.0572003e-01, -6.5709120e-01, 3.6424059e-02, 2.9254007e-01, 7.1681434e-01, 9.4750702e-01, 1.0221071e+00, 9.1976607e-01, 6.6982138e-01, 3.0887735e-01, -9.8866507e-02, -4.6867171e-01, -7.5814873e-01, -8.8839948e-01, -8.5944158e-01, -5.9392083e-01, -4.1673195e-01, 2.3802499e-01, 4.8406914e-01, 8.8220328e-01, 1.0586019e+00, 1.0717028e+00, 9.0843666e-01, 6.1964321e-01, 2.4569570e-01, -1.3832045e-01, -4.5290101e-01, -6.5642822e-01, -6.8739927e-01, -5.5440247e-01, -1.9042298e-01, 3.8640596e-02, 4.0478718e-01, 6.3335621e-01, 9.9474871e-01, 1.1180713e+00, 1.0779797e+00, 8.6868393e-01, 5.5786180e-01, 1.8764953e-01, -1.6020730e-01, -4.1377413e-01, -5.3367841e-01, -4.7591639e-01, -2.5622851e-01, 1.8099770e-01, 4.4726887e-01, 5.5832881e-01, 7.6349711e-01, 1.0790392e+00, 1.1472367e+00, 1.0568508e+00, 8.0951244e-01, 4.8760915e-01, 1.3375619e-01, -1.6614684e-01, -3.4987706e-01, -3.8148859e-01, -2.3572624e-01, 6.5027453e-02, 5.6357759e-01, 8.5973167e-01, 6.9543409e-01, 8.7186539e-01, 1.1336123e+00, 1.1460391e+00, 1.0096545e+00, 7.3351175e-01, 4.1226143e-01, 8.7682478e-02, -1.5280055e-01, -2.5866985e-01, -1.9854257e-01, 3.3175375e-02, 4.0810540e-01, 9.5512110e-01, 1.2733790e+00, 8.0992436e-01, 9.5418483e-01, 1.1576989e+00, 1.1170835e+00, 9.4185513e-01, 6.4814925e-01, 3.3990279e-01, 5.6798849e-02, -1.1487697e-01, -1.3774104e-01, 1.4114995e-02, 3.2662672e-01, 7.6633251e-01, 1.3478311e+00, 1.6800135e+00, 9.0029329e-01, 1.0095080e+00, 1.1513646e+00, 1.0613463e+00, 8.5515594e-01, 5.5558097e-01, 2.7274725e-01, 4.3009859e-02, -5.1133823e-02, 1.3306127e-02, 2.5592273e-01, 6.4324945e-01, 1.1377201e+00, 1.7395355e+00, 2.0774269e+00, 9.6190399e-01, 1.0353085e+00, 1.1158493e+00, 9.8323137e-01, 7.5632429e-01, 4.6382087e-01, 2.1860875e-01, 5.2621003e-02, 4.2057913e-02, 1.9490920e-01, 5.2389431e-01, 9.7730774e-01, 1.5146619e+00, 2.1224315e+00, 2.4579575e+00, 9.9404073e-01, 1.0317975e+00, 1.0529488e+00, 8.8559765e-01, 6.4881188e-01, 3.7634477e-01, 1.8042518e-01, 8.7571993e-02, 1.6534075e-01, 4.0640694e-01, 8.1619704e-01, 1.3262529e+00, 1.8943832e+00, 2.4943156e+00, 2.8198237e+00, 9.8699188e-01, 9.8651195e-01, 9.4642246e-01, 7.5320542e-01, 5.2205086e-01, 2.9105109e-01, 1.6682020e-01, 1.6852239e-01, 3.5087869e-01, 6.8932730e-01, 1.1806998e+00, 1.7402996e+00, 2.3258085e+00, 2.8985312e+00, 3.2027218e+00, 9.7849816e-01, 9.5796198e-01, 8.8603163e-01, 6.8055183e-01, 4.5420325e-01, 2.4722676e-01, 1.6272569e-01, 2.1583037e-01, 4.5412254e-01, 8.4391171e-01, 1.3774351e+00, 1.9616843e+00, 2.5544722e+00, 3.1107321e+00, 3.4025121e+00]);
}

#[test]
fn bicubic_aa_matches_pil_9x3() {
    check(9, 3, &[2.1646753e-01, 8.2463992e-01, 1.0618496e+00, 8.3341128e-01, 2.6364142e-01, -3.6261004e-01, -7.3392904e-01, -6.5880018e-01, -1.5567945e-01, 7.6975155e-01, 1.1322507e+00, 1.0327818e+00, 5.8867437e-01, 7.9346113e-02, -1.8511046e-01, -9.7699687e-03, 5.9344953e-01, 1.4113919e+00, 9.9124151e-01, 1.0164715e+00, 6.8785548e-01, 2.8416315e-01, 1.1947372e-01, 3.9545962e-01, 1.1065369e+00, 2.0424910e+00, 2.8873448e+00]);
}

#[test]
fn bilinear_align_corners_false() {
    // 2x2 -> 4x4: source coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped index).
    let img = Rgb::new(2, 2, vec![0.0, 1.0, 2.0, 3.0].repeat(3));
    let out = resize_bilinear(&img, 4, 4);
    let row0 = [0.0, 0.25, 0.75, 1.0];
    let want: Vec<f32> = [0.0f32, 0.5, 1.5, 2.0].iter().flat_map(|dy| row0.iter().map(move |r| r + dy)).collect();
    assert_eq!(&out.data[..16], want.as_slice());
    // Downscale 4 -> 2 without antialiasing samples at 0.5 and 2.5: averages of pixel pairs.
    let img = Rgb::new(4, 1, vec![0.0, 2.0, 4.0, 8.0].repeat(3));
    let out = resize_bilinear(&img, 1, 2);
    assert_eq!(&out.data[..2], &[1.0, 6.0]);
}

#[test]
fn center_crop_rounds_like_torchvision() {
    let img = Rgb::new(5, 4, (0..20).map(|v| v as f32).collect::<Vec<_>>().repeat(3));
    // (4-2)/2 = 1 row down, (5-2)/2 = 1.5 -> 2 (half to even) columns right.
    let out = center_crop(&img, 2, 2);
    assert_eq!(&out.data[..4], &[7.0, 8.0, 12.0, 13.0]);
}

#[test]
fn png_round_trip_and_read_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a/b.png");
    let img = Rgb::new(2, 1, vec![0.0, 1.0, 0.5, 0.25, 1.0, 0.0]);
    ims3_images::write_png(&p, &img).unwrap();
    let back = ims3_images::read_rgb(&p).unwrap();
    for (a, b) in img.data.iter().zip(&back.data) {
        assert!((a - b).abs() <= 0.5 / 255.0 + 1e-6);
    }
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8 not really a jpeg").unwrap();
    let e = ims3_images::read_rgb(&bad).unwrap_err().to_string();
    assert!(e.contains("broken.jpg"), "{e}");
    assert_eq!(ims3_images::list_images(dir.path()).unwrap().len(), 2);
}
