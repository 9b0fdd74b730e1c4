//! Offline stand-in for `cubecl-llvm` 0.11.3.
//!
//! `cubecl-cuda` always links the pliron/LLVM PTX backend, whose real crate downloads an LLVM
//! toolchain at build time. ims3 enables CubeCL's `cuda-cpp` feature, which makes the CUDA C++
//! (NVRTC) compiler the one every kernel goes through; this crate only supplies the names that
//! `cubecl-cuda` refers to. Asking it to compile a kernel is an error that says why.

use cubecl_core::prelude::KernelDefinition;
use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::compiler::{CompilationError, Compiler};
use cubecl_runtime::kernel::BufferIOAttr;

/// LLVM compilation targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    #[default]
    Cpu,
    Nvptx,
}

/// Options the CUDA runtime fills in for the LLVM backend; kept so its code compiles.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    pub arch: Option<u32>,
    pub sm_arch: Option<cubecl_core::ir::nvidia::SmArch>,
    pub ptx_version: Option<nvptx::ptx_version::PtxVersion>,
    pub grid_constants: bool,
}

/// A PTX module as the LLVM backend would return it. Never produced by this stand-in.
#[derive(Clone, Debug)]
pub struct NvptxModule {
    pub ptx: Vec<core::ffi::c_char>,
    pub entrypoint: String,
    pub ir: String,
    pub shared_memory_size: usize,
    pub io: Vec<BufferIOAttr>,
}

/// Compiled kernel artifact.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    NvptxCode(NvptxModule),
    /// Present so matches with a catch-all arm stay exhaustive-by-design, as upstream.
    Unavailable,
}

impl core::fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlironArtifact::NvptxCode(module) => write!(f, "{}", module.ir),
            PlironArtifact::Unavailable => write!(f, "<llvm backend not built>"),
        }
    }
}

/// The LLVM backend's compiler. This build has none: see the crate docs.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    pub target: LlvmTarget,
}

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &Self::CompilationOptions,
    ) -> Result<Self::Representation, CompilationError> {
        Err(CompilationError::Generic {
            reason: "this build of ims3 has no LLVM backend (offline cubecl-llvm stand-in); \
                     the CUDA runtime must use the CUDA C++/NVRTC compiler (cubecl feature `cuda-cpp`)"
                .to_string(),
            backtrace: BackTrace::capture(),
        })
    }

    fn extension(&self) -> &'static str {
        "ll"
    }

    fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}

pub mod nvptx {
    pub mod ptx_version {
        use core::fmt;

        /// A PTX ISA version (8.7 is `87`). Only used for cache namespaces by the CUDA runtime
        /// when the LLVM backend is selected, which it never is in this build.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct PtxVersion(u32);

        /// First CUDA driver to load each PTX version, newest first (clang's table).
        const DRIVER_PTX: &[(i32, u32)] = &[
            (13030, 93), (13020, 92), (13010, 91), (13000, 90), (12090, 88), (12080, 87),
            (12050, 85), (12040, 84), (12030, 83), (12020, 82), (12010, 81), (12000, 80),
            (11080, 78), (11070, 77), (11060, 76), (11050, 75), (11040, 74), (11030, 73),
            (11020, 72), (11010, 71), (11000, 70), (10020, 65), (10010, 64), (10000, 63),
        ];

        impl PtxVersion {
            /// The newest PTX version a driver (`cuDriverGetVersion`, 12.8 = 12080) loads.
            pub fn for_driver(driver: i32) -> Option<Self> {
                DRIVER_PTX.iter().find(|(d, _)| driver >= *d).map(|(_, p)| Self(*p))
            }
        }

        impl fmt::Display for PtxVersion {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "ptx{}", self.0)
            }
        }
    }
}

pub mod shared {
    pub mod lowered_features {
        use cubecl_core::ir::DeviceProperties;

        /// The GPU target a device's features would be narrowed for.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum GpuTarget {
            Nvptx,
        }

        /// Upstream narrows the advertised features to what LLVM lowers; the runtime only calls
        /// it when the LLVM backend is selected. With the C++ backend nothing is narrowed.
        pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
    }
}
