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

/// What is wrong with an IDX file's bytes.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("gzip stream")]
    Gzip(#[source] std::io::Error),
    #[error("bad magic (not an IDX file)")]
    Magic,
    #[error("IDX element type 0x{0:02x}, only unsigned bytes (0x08) are supported")]
    ElementType(u8),
    #[error("IDX header truncated ({dims} dimensions, {bytes} bytes)")]
    Header { dims: usize, bytes: usize },
    #[error("IDX dims {dims:?} need {need} values, file has {have}")]
    Length { dims: Vec<usize>, need: usize, have: usize },
    #[error("image dims {images:?} and label dims {labels:?} do not pair")]
    Pairing { images: Vec<usize>, labels: Vec<usize> },
}

/// Reads an IDX file of unsigned bytes, gzipped or not.
pub fn read_idx_u8(path: &Path) -> Result<IdxU8, ImageError> {
    let bad = |source: IdxError| ImageError::Idx { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(|source| ImageError::Open { path: path.to_path_buf(), source })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(|e| bad(IdxError::Gzip(e)))?;
        out
    } else {
        raw
    };
    parse_idx_u8(&bytes).map_err(bad)
}

/// Parses IDX bytes (already decompressed).
pub fn parse_idx_u8(bytes: &[u8]) -> Result<IdxU8, IdxError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(IdxError::Magic);
    }
    if bytes[2] != 0x08 {
        return Err(IdxError::ElementType(bytes[2]));
    }
    let nd = bytes[3] as usize;
    let head = 4 + 4 * nd;
    if nd == 0 || bytes.len() < head {
        return Err(IdxError::Header { dims: nd, bytes: bytes.len() });
    }
    let dims: Vec<usize> = (0..nd).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let n: usize = dims.iter().product();
    if bytes.len() != head + n {
        return Err(IdxError::Length { have: bytes.len() - head, need: n, dims });
    }
    Ok(IdxU8 { dims, data: bytes[head..].to_vec() })
}

/// Mean and standard deviation (population) of 8-bit grey pixels scaled to [0, 1]: the
/// normalisation of a grey dataset's networks, from its training pixels.
pub fn grey_stats(pixels: &[u8]) -> (f32, f32) {
    let n = pixels.len().max(1) as f64;
    let mean = pixels.iter().map(|&v| v as f64 / 255.0).sum::<f64>() / n;
    let var = pixels.iter().map(|&v| (v as f64 / 255.0 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, var.sqrt() as f32)
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
            [format!("{stem}.gz"), stem.clone()]
                .into_iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| ImageError::IdxMissing { dir: dir.to_path_buf(), stem })
        };
        let images_path = find(format!("{prefix}-images-idx3-ubyte"))?;
        let images = read_idx_u8(&images_path)?;
        let labels = read_idx_u8(&find(format!("{prefix}-labels-idx1-ubyte"))?)?;
        if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
            return Err(ImageError::Idx { path: images_path, source: IdxError::Pairing { images: images.dims, labels: labels.dims } });
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

    /// The whole split as `[N, 1, H, W]` values in [-1, 1] (`v / 127.5 - 1`), what a pixel-space
    /// DiT trains on.
    pub fn values_pm1(&self) -> Vec<f32> {
        self.pixels.iter().map(|&v| v as f32 / 127.5 - 1.0).collect()
    }

    /// Indices of the images of class `c`, in file order.
    pub fn of_class(&self, c: u8) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.labels[i] == c).collect()
    }

    /// The images `ids` (in that order) as a split of their own.
    pub fn subset(&self, ids: &[usize]) -> IdxSplit {
        let mut pixels = Vec::with_capacity(ids.len() * self.height * self.width);
        for &i in ids {
            pixels.extend_from_slice(self.image(i));
        }
        IdxSplit { pixels, labels: ids.iter().map(|&i| self.labels[i]).collect(), height: self.height, width: self.width }
    }

    /// Writes `<dir>/<prefix>-images-idx3-ubyte` and `<dir>/<prefix>-labels-idx1-ubyte`
    /// (uncompressed), each atomically; `read(dir, prefix)` gives the split back.
    pub fn write(&self, dir: &Path, prefix: &str) -> Result<(), ImageError> {
        let n = self.len() as u32;
        for (stem, dims, data) in [
            (format!("{prefix}-images-idx3-ubyte"), vec![n, self.height as u32, self.width as u32], &self.pixels),
            (format!("{prefix}-labels-idx1-ubyte"), vec![n], &self.labels),
        ] {
            let mut bytes = vec![0u8, 0, 0x08, dims.len() as u8];
            for d in dims {
                bytes.extend(d.to_be_bytes());
            }
            bytes.extend_from_slice(data);
            let path = dir.join(stem);
            ims3_util::atomic_write(&path, &bytes).map_err(|source| ImageError::Write { path, source })?;
        }
        Ok(())
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
        assert!(parse_idx_u8(&b[..15]).unwrap_err().to_string().contains("need 6 values"));
        b[2] = 0x0d;
        assert!(parse_idx_u8(&b).unwrap_err().to_string().contains("0x0d"));
        assert!(parse_idx_u8(b"PNG").unwrap_err().to_string().contains("bad magic"));
        assert_eq!(grey_stats(&[0, 255]), (0.5, 0.5));
    }

    #[test]
    fn subset_writes_and_reads_back() {
        let split = IdxSplit { pixels: (0..4 * 6).map(|v| v as u8).collect(), labels: vec![3, 1, 3, 0], height: 2, width: 3 };
        let sub = split.subset(&[2, 0]);
        assert_eq!(sub.labels, vec![3, 3]);
        assert_eq!(sub.image(0), split.image(2));
        assert_eq!(sub.image(1), split.image(0));
        let dir = tempfile::tempdir().unwrap();
        sub.write(dir.path(), "train").unwrap();
        assert_eq!(IdxSplit::read(dir.path(), "train").unwrap(), sub);
    }
}
