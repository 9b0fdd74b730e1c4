//! The IDX format of (Fashion-)MNIST (`train-images-idx3-ubyte[.gz]`, `...-labels-idx1-ubyte`):
//! a big-endian header (two zero bytes, a type byte 0x08 for u8, the number of dimensions, one
//! u32 per dimension), then the values row-major. Gzipped files are recognised by their magic.

use std::io::Read;
use std::path::Path;

use crate::ImageError;

/// An IDX array of u8.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxU8 {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn bad(path: &Path, why: impl Into<String>) -> ImageError {
    ImageError::Decode { path: path.to_path_buf(), why: why.into() }
}

/// Reads an IDX file of unsigned bytes, gzipped or not.
pub fn read_idx_u8(path: &Path) -> Result<IdxU8, ImageError> {
    let raw = std::fs::read(path).map_err(|e| ImageError::Read { path: path.to_path_buf(), why: e.to_string() })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(|e| bad(path, format!("gzip: {e}")))?;
        out
    } else {
        raw
    };
    parse_idx_u8(&bytes).map_err(|why| bad(path, why))
}

/// Parses IDX bytes (already decompressed).
pub fn parse_idx_u8(bytes: &[u8]) -> Result<IdxU8, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x}, only unsigned bytes (0x08) are supported", bytes[2]));
    }
    let nd = bytes[3] as usize;
    let head = 4 + 4 * nd;
    if nd == 0 || bytes.len() < head {
        return Err(format!("IDX header truncated ({nd} dimensions, {} bytes)", bytes.len()));
    }
    let dims: Vec<usize> = (0..nd).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let n: usize = dims.iter().product();
    if bytes.len() != head + n {
        return Err(format!("IDX dims {dims:?} need {n} values, file has {}", bytes.len() - head));
    }
    Ok(IdxU8 { dims, data: bytes[head..].to_vec() })
}

/// A split of an IDX image dataset: `<prefix>-images-idx3-ubyte[.gz]` with
/// `<prefix>-labels-idx1-ubyte[.gz]` (prefix `train` or `t10k` for (Fashion-)MNIST).
#[derive(Clone, Debug, PartialEq)]
pub struct IdxSplit {
    /// Row-major `[n, height, width]` grey values.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub height: usize,
    pub width: usize,
}

impl IdxSplit {
    /// Reads the pair from `dir`, preferring the gzipped files; the error names the folder and
    /// the file that is missing or does not pair.
    pub fn read(dir: &Path, prefix: &str) -> Result<Self, ImageError> {
        let find = |stem: String| -> Result<std::path::PathBuf, ImageError> {
            [format!("{stem}.gz"), stem.clone()].into_iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| ImageError::Read {
                path: dir.join(&stem),
                why: format!("no {stem}[.gz] in {}", dir.display()),
            })
        };
        let images_path = find(format!("{prefix}-images-idx3-ubyte"))?;
        let images = read_idx_u8(&images_path)?;
        let labels = read_idx_u8(&find(format!("{prefix}-labels-idx1-ubyte"))?)?;
        if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
            return Err(bad(&images_path, format!("image dims {:?} and label dims {:?} do not pair", images.dims, labels.dims)));
        }
        Ok(Self { pixels: images.data, labels: labels.data, height: images.dims[1], width: images.dims[2] })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` as grey bytes, row-major.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.height * self.width;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Image `i` as an RGB image with values in [-1, 1] (the grey value in all three planes).
    pub fn rgb(&self, i: usize) -> crate::Rgb {
        let g: Vec<f32> = self.image(i).iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        crate::Rgb::new(self.width, self.height, [g.as_slice(), g.as_slice(), g.as_slice()].concat())
    }

    /// Image `i` as an 8-bit RGB image (the grey value in all three channels).
    pub fn rgb8(&self, i: usize) -> crate::pil::Rgb8 {
        crate::pil::Rgb8::from_grey(self.width, self.height, self.image(i))
    }

    /// Indices of the images of class `c`, in file order.
    pub fn of_class(&self, c: u8) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.labels[i] == c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut b = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend([1, 2, 3, 4, 5, 6]);
        assert_eq!(parse_idx_u8(&b).unwrap(), IdxU8 { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] });
        assert!(parse_idx_u8(&b[..15]).unwrap_err().contains("need 6 values"));
        b[2] = 0x0d;
        assert!(parse_idx_u8(&b).unwrap_err().contains("0x0d"));
        assert!(parse_idx_u8(b"PNG").unwrap_err().contains("bad magic"));
    }
}
