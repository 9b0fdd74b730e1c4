//! The conversions the hand-written Flex passes of this crate (`gelu.rs`, `adaln.rs`) share: a
//! Flex primitive as a contiguous f32 slice, and a result back as a primitive.

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};

/// The tensor as a contiguous f32 buffer from offset 0, or None for another dtype.
pub(crate) fn f32_contiguous(t: FlexTensor) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 {
        return None;
    }
    Some(if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() })
}

/// The values of a tensor that went through [`f32_contiguous`].
pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 (f32_contiguous)")
}

/// An f32 primitive of `shape` holding `values`.
pub(crate) fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
