//! A labelled contact sheet: one row of images per class with the class's name beside it, as
//! an SVG holding the image grid as one embedded PNG (no viewer or network needed).

use base64::Engine;
use ims3_images::Rgb;

use crate::{ReportError, contact_sheet};

/// `rows[c]` (images in [-1, 1]) drawn `zoom` times their size, with `classes[c]` left of row
/// `c` and `title` above.
pub fn labelled_contact_sheet(title: &str, rows: &[Vec<Rgb>], classes: &[String], zoom: usize, pad: usize) -> Result<String, ReportError> {
    let grid = contact_sheet(rows, zoom, pad);
    let png = png_bytes(&grid)?;
    let row_h = rows.iter().flatten().map(|i| i.height).max().unwrap_or(0) * zoom + pad;
    let label_w = 12 + 8 * classes.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    let top = 36;
    let (w, h) = (label_w + grid.width + 8, top + grid.height + 8);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#FFFFFF\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"18\">{}</text>\n",
        w / 2,
        escape(title)
    );
    for (c, name) in classes.iter().enumerate().take(rows.len()) {
        let y = top + pad + c * row_h + row_h / 2;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{y}\" dy=\"0.35em\" text-anchor=\"end\" font-family=\"sans-serif\" font-size=\"13\">{}</text>\n",
            label_w - 6,
            escape(name)
        ));
    }
    svg.push_str(&format!(
        "<image x=\"{label_w}\" y=\"{top}\" width=\"{}\" height=\"{}\" href=\"data:image/png;base64,{}\"/>\n</svg>\n",
        grid.width,
        grid.height,
        base64::engine::general_purpose::STANDARD.encode(png)
    ));
    Ok(svg)
}

/// An image with values in [-1, 1] as PNG bytes (clamped, rounded to 8 bits).
pub fn png_bytes(img: &Rgb) -> Result<Vec<u8>, ReportError> {
    let (w, h) = (img.width, img.height);
    let mut buf = image::RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let px = std::array::from_fn(|c| (((img.at(c, y, x) + 1.0) * 0.5) * 255.0 + 0.5).clamp(0.0, 255.0) as u8);
            buf.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    buf.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| ReportError::Draw(e.to_string()))?;
    Ok(bytes.into_inner())
}

/// `&`, `<`, `>` and `"` as XML entities.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
